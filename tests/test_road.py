"""ROAD (issue 16) against pytorch-grad-cam's implementation on the same maps: the imputed images and the scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from archs import IMG, build

from caap import metrics
from caap.errors import CaapError
from caap.metrics.road import exact_keep, linear_impute, removal_keep, removal_order, tie_keys

road = pytest.importorskip("pytorch_grad_cam.metrics.road")


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(12))


def maps(n: int = 2) -> torch.Tensor:
    return torch.rand(n, IMG, IMG, generator=torch.Generator().manual_seed(13))


@pytest.mark.parametrize("morf", [True, False])
@pytest.mark.parametrize("share", [10, 50, 90])
def test_the_imputation_equals_grad_cams(morf, share):
    x, m = images(1)[0], maps(1)[0]
    remover = (road.RemoveMostRelevantFirst if morf else road.RemoveLeastRelevantFirst)(
        100 - share, road.NoisyLinearImputer(noise=0.0))
    expected = remover(x.clone(), m.clone())
    keep = removal_keep(m.numpy(), share, morf)
    assert abs((~keep).mean() * 100 - share) < 1  # the share removed
    torch.testing.assert_close(linear_impute(x, keep), expected, rtol=1e-4, atol=1e-5)


def test_road_scores_equal_grad_cams_combined():
    """With the noise off, ``road_morf`` / ``road_lerf`` / ``road`` equal grad-cam's averages over the same shares
    (grad-cam returns differences to the unperturbed score; the differences of the combined score cancel it)."""
    from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, x, m = build("timm_vit"), images(), maps()
    t = torch.tensor([2, 5])
    cams, targets = m.numpy(), [ClassifierOutputSoftmaxTarget(int(c)) for c in t]
    shares = [20, 60]

    def theirs(remover):
        return np.mean([PerturbationConfidenceMetric(remover(100 - s, road.NoisyLinearImputer(noise=0.0)))(
            x, cams, targets, model, return_diff=False) for s in shares], axis=0)

    morf, lerf = theirs(road.RemoveMostRelevantFirst), theirs(road.RemoveLeastRelevantFirst)
    options = {"percentiles": "20,60", "noise": 0.0, "ties": "percentile"}  # grad-cam's removal rule
    np.testing.assert_allclose(metrics.build("road_morf", **options)(model, x, t, m).numpy(), morf, rtol=1e-4)
    np.testing.assert_allclose(metrics.build("road_lerf", **options)(model, x, t, m).numpy(), lerf, rtol=1e-4)
    np.testing.assert_allclose(metrics.build("road", **options)(model, x, t, m).numpy(), (lerf - morf) / 2,
                               rtol=1e-4, atol=1e-7)


def test_road_noise_is_seeded_per_image_and_options_are_checked():
    model, x, m, t = build("timm_vit"), images(3), maps(3), torch.tensor([1, 2, 3])
    metric = metrics.build("road_morf:percentiles=30,70")
    together = metric(model, x, t, m)
    alone = torch.cat([metric(model, x[i : i + 1], t[i : i + 1], m[i : i + 1]) for i in range(3)])
    assert not metrics.get("road_morf").higher_is_better and metrics.get("road").higher_is_better
    torch.testing.assert_close(together[:1], alone[:1])  # image 0 alone is image 0 of the batch
    for bad in ("road:percentiles=0", "road:noise=-1", "road:seed=x"):
        with pytest.raises(CaapError):
            metrics.build(bad)


def test_road_metrics_on_one_batch_share_their_solves(monkeypatch):
    """``road``, ``road_morf`` and ``road_lerf`` given one :class:`Solves` (as the runner does) and scored on the
    same batch solve each removal once; any other batch, map or setting solves again; metrics not shared never see
    each other's scores; the shared scores equal fresh ones."""
    model, x, m, t = build("timm_vit"), images(2), maps(2), torch.tensor([1, 2])
    calls = []
    from caap.metrics import road as ours

    monkeypatch.setattr(ours, "linear_impute", lambda *a: calls.append(1) or linear_impute(*a))
    names = ("road:percentiles=30,70", "road_morf:percentiles=30,70", "road_lerf:percentiles=30,70",
             "road_morf:percentiles=30,70:seed=1")
    built = [metrics.build(n) for n in names]
    alone = [metrics.build(n)(model, x, t, m) for n in names[:3]]  # not shared: each solves its own
    assert len(calls) == 2 * 2 * (2 + 1 + 1)  # images × shares × the orders each needs
    calls.clear()
    ours.share_solves(built)
    assert built[0].solves is built[1].solves is built[2].solves and built[3].solves is not built[0].solves
    shared = [metric(model, x, t, m) for metric in built[:3]]
    assert len(calls) == 2 * 2 * 2  # images × shares × orders, once
    for a, b in zip(shared, alone, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(shared[0], (shared[2] - shared[1]) / 2)
    fresh = built[1](model, x.clone(), t, m)  # other images
    assert len(calls) == 12
    torch.testing.assert_close(fresh, shared[1])
    other = m.clone()
    other[0, 0, 0] += 1
    built[1](model, x, t, other)  # another map
    built[3](model, x, t, other)  # another setting: its own solves
    assert len(calls) == 20


@pytest.mark.parametrize("morf", [True, False])
def test_exactly_the_share_goes_and_ties_go_patch_by_patch_in_a_seeded_order(morf):
    """A Grad-CAM-like map, 80 % zeros: grad-cam's percentile rule removes the whole zero plateau at once; the
    default removes exactly the share, tied pixels whole patch by whole patch in a seeded random order of the
    patches. Without ties both rules remove the same pixels, up to the percentile's boundary pixel."""
    size, grid = (32, 32), (4, 4)
    cam = np.zeros(size)
    cam[:8, :16] = np.linspace(1, 2, 8 * 16).reshape(8, 16)  # 2 of 16 patches carry all the mass
    keys = tie_keys(size, grid, seed=0)
    order = removal_order(cam, keys, morf)
    for share in (10, 30, 50, 90):
        keep = exact_keep(order, size, share)
        assert (~keep).sum() == round(share * 1024 / 100)
    plateau = removal_keep(cam, 30, True)
    assert (~plateau).mean() > 0.8  # grad-cam's "30 %" removes the zeros too
    # within the plateau whole patches go one after the other: at most one patch is partly removed
    keep = exact_keep(removal_order(cam, keys, True), size, 50)
    removed_per_patch = (~keep).reshape(4, 8, 4, 8).sum((1, 3))
    assert ((removed_per_patch > 0) & (removed_per_patch < 64)).sum() <= 1
    assert not np.array_equal(keys, tie_keys(size, grid, seed=1))  # the seed orders the ties
    smooth = np.random.default_rng(0).random(size)
    for share in (10, 50, 90):
        ours = exact_keep(removal_order(smooth, keys, morf), size, share)
        theirs = removal_keep(smooth, share, morf)
        assert (ours != theirs).sum() <= 1
