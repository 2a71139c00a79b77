"""The coalition game of caap.methods.caap.coalitions (benchmarks/shapley.py's study): its singletons are CAAP's
denoising map (its complements are not the noising map: there a patch left out keeps evolving with the others,
while noising overwrites it with the context run's stream at every patched block — docs/METHOD.md), and its
Shapley estimators are exact on games whose values are known."""

from __future__ import annotations

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from caap import CAAP
from caap.methods.caap.coalitions import exact_shapley, game, permutations, stratified


def test_the_games_singletons_are_the_denoising_map():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    v = game(model, x, target=2, layers=[0, 1], grid=(2, 2))  # 16 coalitions of 4 patches
    context = torch.zeros_like(x[0])
    denoise = CAAP(model, layers=[0, 1], context=context).explain(x, target=2).scores[0].flatten()
    full = len(v) - 1
    for p in range(4):
        assert np.isclose(v[1 << p] - v[0], denoise[p].item(), atol=1e-5)
    source = model(x)[0, 2].item()
    blank = model(context[None])[0, 2].item()
    assert np.isclose(v[full] - v[0], source - blank, atol=1e-5)  # every patch patched: the source run
    phi = exact_shapley(v, 4)
    assert np.isclose(phi.sum(), v[full] - v[0])  # efficiency


def test_the_estimators_on_a_game_whose_shapley_values_are_known():
    n, weights = 5, np.array([0.5, -1.0, 2.0, 0.0, 1.5])
    members = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(float)
    v = members @ weights + 3.0 * members[:, 0] * members[:, 1]  # additive, plus one pair sharing 3.0 equally
    expected = weights + np.array([1.5, 1.5, 0, 0, 0])
    np.testing.assert_allclose(exact_shapley(v, n), expected)
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(permutations(v, n, 4000, rng), expected, atol=0.1)
    np.testing.assert_allclose(stratified(v, n, n, 400, rng), expected, atol=0.15)
