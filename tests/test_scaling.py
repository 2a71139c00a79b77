"""benchmarks/scaling.py times exact CAAP on patch subsets (caap.core.groups.spread_groups): a subset call must
compute exactly the full map's values at the chosen patches (and patch nothing else), or the extrapolated cost
would time other work."""

from __future__ import annotations

import timm
import torch

from caap import CAAP
from caap.core.groups import spread_groups


def test_subset_groups_patch_k_spread_patches_one_per_group():
    groups = spread_groups((14, 14), 8)
    chosen = groups[groups >= 0]
    assert sorted(chosen.tolist()) == list(range(8))
    flat = (groups.flatten() >= 0).nonzero().flatten()
    assert flat[0] == 0 and flat[-1] == 195


def test_a_subset_call_equals_the_full_map_at_its_patches():
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False).eval()  # 160 px, a 10 x 10 grid
    image = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    explainer = CAAP(model, layers=[1, 2])
    full = explainer.explain(image).scores[0]
    grid = tuple(full.shape)
    groups = spread_groups(grid, 5)
    part = explainer.explain(image, groups=groups).scores[0]
    chosen = groups >= 0
    torch.testing.assert_close(part[chosen], full[chosen], rtol=1e-5, atol=1e-6)
    assert torch.isnan(part[~chosen]).all()
