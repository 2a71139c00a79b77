"""MAC accounting: a hand formula for a plain ViT, and the whole engine call counted op by op."""

from __future__ import annotations

import pytest
import torch
from archs import ARCHS, CLASSES, DEPTH, DIM, GRID, IMG, PATCH, build, explainable

from caap import CAAP
from caap.methods.caap import caap_macs, count_macs


def _hand_block(n: int, d: int, hidden: int, rows: int | None = None) -> int:
    """One pre-norm ViT block with fused qkv: rows ``r`` get queries, projection and MLP; keys/values use all n."""
    r = n if rows is None else rows
    return r * d * d + n * d * 2 * d + 2 * r * n * d + r * d * d + 2 * r * d * hidden


def test_macs_match_a_hand_formula_for_a_plain_vit():
    model = build("timm_vit")
    n, p = 1 + GRID[0] * GRID[1], GRID[0] * GRID[1]
    hidden = 4 * DIM
    layers = [1, 2]
    count = caap_macs(CAAP(model, layers=layers), (IMG, IMG), images=2)
    embed = p * 3 * PATCH * PATCH * DIM
    head = DIM * CLASSES
    assert count.block == {i: _hand_block(n, DIM, hidden) for i in range(DEPTH)}
    assert count.last_rows == _hand_block(n, DIM, hidden, rows=1)
    assert count.forward == embed + DEPTH * _hand_block(n, DIM, hidden) + head
    variants = 2 * p
    expected_patched = variants * ((DEPTH - 1 - layers[0]) * _hand_block(n, DIM, hidden)
                                   + _hand_block(n, DIM, hidden, rows=1) + head)
    assert count.variants == variants
    assert count.total == 2 * 2 * count.forward + expected_patched


@pytest.mark.parametrize("name", ["timm_vit", "timm_deit_distilled", "timm_avg_fc_norm", "timm_conv_stem",
                                  "hf_vit", "hf_dinov2", "generic_torch"])
def test_macs_equal_the_ops_of_a_real_call(name):
    """The count, block by block, equals what the counter sees over a whole engine call (groups included)."""
    assert name in ARCHS
    model = build(name)
    images = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    groups = torch.arange(GRID[0] * GRID[1]).view(GRID) // 3  # uneven groups
    explainer = CAAP(explainable(name, model), layers=[1, 3], batch_size=5)
    with count_macs() as seen:
        explainer.explain(images, groups=groups)
    assert caap_macs(explainer, (IMG, IMG), images=2, groups=groups).total == seen["macs"]
