"""Metrics against hand-computed cases and Quantus on the same maps and masks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from caap import metrics
from caap.errors import CaapError


def _case(seed=0, b=4, size=16, grid=(4, 4)):
    gen = torch.Generator().manual_seed(seed)
    images = torch.zeros(b, 3, size, size)
    maps = torch.rand(b, *grid, generator=gen)
    masks = torch.zeros(b, size, size, dtype=torch.bool)
    masks[:, 2:9, 3:10] = True
    masks[1] = False
    masks[1, 12:, 12:] = True
    return images, torch.zeros(b, dtype=torch.long), maps, masks


def test_hand_computed_cases():
    images = torch.zeros(1, 3, 4, 4)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True
    peak_on = torch.tensor([[[5.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]])
    t = torch.zeros(1, dtype=torch.long)
    assert metrics.get("pointing_game")()(None, images, t, peak_on, mask).item() == 1.0
    assert metrics.get("pointing_game")()(None, images, t, peak_on.flip(-1), mask).item() == 0.0
    assert metrics.get("relevance_mass")()(None, images, t, peak_on, mask).item() == pytest.approx(6 / 8)
    assert metrics.get("energy_pointing_game")()(None, images, t, peak_on - 0.5, mask).item() == pytest.approx(
        (4.5 + 0.5) / (4.5 + 0.5 * 3))
    assert metrics.get("relevance_rank")()(None, images, t, peak_on, mask).item() == pytest.approx(2 / 4)
    uniform = torch.ones(1, 4, 4)
    assert metrics.get("sparseness")()(None, images, t, uniform, None).item() == pytest.approx(0, abs=1e-6)
    spike = torch.zeros(1, 4, 4)
    spike[0, 0, 0] = 1
    assert metrics.get("sparseness")()(None, images, t, spike, None).item() == pytest.approx(15 / 16, abs=1e-4)


def test_patch_maps_point_at_patches_touching_the_mask():
    images, t, maps, masks = _case()
    hits = metrics.get("pointing_game")()(None, images, t, maps, masks)
    on = metrics.patch_mask(masks, (4, 4))
    for b in range(len(maps)):
        assert hits[b] == on[b].flatten()[maps[b].flatten().argmax()]


@pytest.mark.parametrize(("ours", "theirs"), [("pointing_game", "PointingGame"),
                                               ("relevance_mass", "RelevanceMassAccuracy"),
                                               ("relevance_rank", "RelevanceRankAccuracy")])
def test_localisation_agrees_with_quantus(ours, theirs):
    quantus = pytest.importorskip("quantus")
    images, t, maps, masks = _case(seed=3, size=16)
    pixels = torch.nn.functional.interpolate(maps[:, None], size=(16, 16), mode="nearest")[:, 0]
    pixels = pixels + 1e-3 * torch.rand(pixels.shape, generator=torch.Generator().manual_seed(1))  # no ties
    got = metrics.get(ours)()(None, images, t, pixels, masks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = getattr(quantus, theirs)(disable_warnings=True)(
            model=None, x_batch=images.numpy(), y_batch=t.numpy(), a_batch=pixels[:, None].numpy(),
            s_batch=masks[:, None].float().numpy(), device="cpu")
    np.testing.assert_allclose(got.numpy(), np.asarray(peer, dtype=np.float64), rtol=1e-5, atol=1e-6)


def test_metric_metadata_and_errors():
    assert all(not metrics.get(n).needs_model for n in metrics.available())
    assert metrics.get("pointing_game").needs_masks and metrics.get("pointing_game").higher_is_better
    images, t, maps, masks = _case()
    with pytest.raises(CaapError, match="needs ground-truth masks"):
        metrics.get("relevance_mass")()(None, images, t, maps, None)
    with pytest.raises(CaapError, match="unknown metric 'iou'"):
        metrics.get("iou")
    with pytest.raises(CaapError, match=r"maps must be \[B=4, h, w\]"):
        metrics.get("sparseness")()(None, images, t, maps[0], None)
