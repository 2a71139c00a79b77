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
    pixel_rule = metrics.get("pointing_game")(resolution="pixel")
    assert pixel_rule(None, images, t, peak_on, mask).item() == 1.0
    assert pixel_rule(None, images, t, peak_on.flip(-1), mask).item() == 0.0
    assert metrics.get("relevance_mass")()(None, images, t, peak_on, mask).item() == pytest.approx(6 / 8)
    assert metrics.get("energy_pointing_game")()(None, images, t, peak_on - 0.5, mask).item() == pytest.approx(
        (4.5 + 0.5) / (4.5 + 0.5 * 3))
    assert metrics.get("relevance_rank")()(None, images, t, peak_on, mask).item() == pytest.approx(2 / 4)
    uniform = torch.ones(1, 4, 4)
    assert metrics.get("sparseness")()(None, images, t, uniform, None).item() == pytest.approx(0, abs=1e-6)
    spike = torch.zeros(1, 4, 4)
    spike[0, 0, 0] = 1
    assert metrics.get("sparseness")()(None, images, t, spike, None).item() == pytest.approx(15 / 16, abs=1e-4)


def test_energy_pointing_game_uses_the_bounding_box():
    from caap.metrics.localisation import bounding_boxes

    images = torch.zeros(1, 3, 4, 4)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 2, 2] = True  # an L-free diagonal object: its box is the top-left 3x3
    assert bounding_boxes(mask)[0].tolist() == [[True] * 3 + [False]] * 3 + [[False] * 4]
    assert not bounding_boxes(torch.zeros(1, 4, 4, dtype=torch.bool)).any()
    pixels = torch.zeros(1, 4, 4)
    pixels[0, 1, 1], pixels[0, 3, 3], pixels[0, 0, 0] = 2.0, 1.0, -5.0
    t = torch.zeros(1, dtype=torch.long)
    assert metrics.get("energy_pointing_game")()(None, images, t, pixels, mask).item() == pytest.approx(2 / 3)
    assert metrics.get("energy_pointing_game")(box=False)(None, images, t, pixels, mask).item() == 0.0


def test_patch_maps_point_at_patches_touching_the_mask():
    images, t, maps, masks = _case()
    hits = metrics.get("pointing_game")()(None, images, t, maps, masks)
    on = metrics.patch_mask(masks, (4, 4))
    for b in range(len(maps)):
        assert hits[b] == on[b].flatten()[maps[b].flatten().argmax()]


def test_one_pointing_game_rule_for_patch_and_pixel_maps():
    """The default pools a pixel map to the model's patch grid before taking the maximum, as a patch map is
    judged: a single hot pixel in a cold patch loses to a warm patch. ``resolution=pixel`` takes both at pixel
    level, where a patch map's top patch must lie wholly on the mask."""
    from archs import IMG, build

    model = build("timm_vit")  # 4x4 patches of 8 px on a 32 px input
    images, t = torch.zeros(1, 3, IMG, IMG), torch.zeros(1, dtype=torch.long)
    mask = torch.zeros(1, IMG, IMG, dtype=torch.bool)
    mask[0, :8, :8] = True  # patch (0, 0)
    pixels = torch.zeros(1, IMG, IMG)
    pixels[0, :8, :8] = 0.5  # a warm patch on the object
    pixels[0, 20, 20] = 1.0  # one hot pixel off it
    game = metrics.get("pointing_game")
    assert game()(model, images, t, pixels, mask).item() == 1.0
    assert game(resolution="pixel")(model, images, t, pixels, mask).item() == 0.0
    patch_map = torch.zeros(1, 4, 4)
    patch_map[0, 0, 0] = 1.0
    half = mask.clone()
    half[0, :, 4:] = False  # the mask covers half of the top patch: touching it is a hit at patch level only
    assert game()(model, images, t, patch_map, half).item() == 1.0
    assert game(resolution="pixel")(model, images, t, patch_map, half).item() == 0.0
    with pytest.raises(CaapError, match="resolution"):
        game(resolution="cell")


@pytest.mark.parametrize(("ours", "theirs"), [("pointing_game:resolution=pixel", "PointingGame"),
                                               ("relevance_mass", "RelevanceMassAccuracy"),
                                               ("relevance_rank", "RelevanceRankAccuracy")])
def test_localisation_agrees_with_quantus(ours, theirs):
    quantus = pytest.importorskip("quantus")
    images, t, maps, masks = _case(seed=3, size=16)
    pixels = torch.nn.functional.interpolate(maps[:, None], size=(16, 16), mode="nearest")[:, 0]
    pixels = pixels + 1e-3 * torch.rand(pixels.shape, generator=torch.Generator().manual_seed(1))  # no ties
    got = metrics.build(ours)(None, images, t, pixels, masks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = getattr(quantus, theirs)(disable_warnings=True)(
            model=None, x_batch=images.numpy(), y_batch=t.numpy(), a_batch=pixels[:, None].numpy(),
            s_batch=masks[:, None].float().numpy(), device="cpu")
    np.testing.assert_allclose(got.numpy(), np.asarray(peer, dtype=np.float64), rtol=1e-5, atol=1e-6)


def test_relevance_mass_of_signed_maps_counts_positive_relevance():
    quantus = pytest.importorskip("quantus")
    images, t, maps, masks = _case(seed=5, size=16)
    signed = torch.nn.functional.interpolate(maps[:, None], size=(16, 16), mode="nearest")[:, 0] - 0.5

    def peer(a):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(quantus.RelevanceMassAccuracy(disable_warnings=True)(
                model=None, x_batch=images.numpy(), y_batch=t.numpy(), a_batch=a[:, None].numpy(),
                s_batch=masks[:, None].float().numpy(), device="cpu"), dtype=np.float64)

    positive = metrics.get("relevance_mass")()(None, images, t, signed, masks)
    np.testing.assert_allclose(positive.numpy(), peer(signed.clamp(min=0)), rtol=1e-5, atol=1e-6)
    assert ((positive >= 0) & (positive <= 1)).all()
    as_is = metrics.get("relevance_mass")(positive=False)(None, images, t, signed, masks)
    np.testing.assert_allclose(as_is.numpy(), peer(signed), rtol=1e-4, atol=1e-6)
    none = metrics.get("relevance_mass")()(None, images, t, -signed.abs(), masks)
    assert (none == 0).all()


def test_metric_metadata_and_errors():
    with_model = {"deletion", "insertion", "positive_perturbation", "negative_perturbation", "randomization",
                  "quantus", "road", "road_morf", "road_lerf", "deletion_tis", "insertion_tis",
                  "positive_perturbation_chefer", "negative_perturbation_chefer"}
    assert {n for n in metrics.available() if metrics.get(n).needs_model} == with_model
    assert metrics.get("pointing_game").needs_masks and metrics.get("pointing_game").higher_is_better
    images, t, maps, masks = _case()
    with pytest.raises(CaapError, match="needs ground-truth masks"):
        metrics.get("relevance_mass")()(None, images, t, maps, None)
    with pytest.raises(CaapError, match="unknown metric 'iou'"):
        metrics.get("iou")
    with pytest.raises(CaapError, match=r"maps must be \[B=4, h, w\]"):
        metrics.get("sparseness")()(None, images, t, maps[0], None)


def _naive_curve(model, image, target, patch_map, canvas, insert, step, patch=8):
    """Deletion / insertion curve of one image by explicit loops over ranked patches."""
    gh, gw = patch_map.shape
    order = sorted(range(gh * gw), key=lambda p: (-float(patch_map.flatten()[p]), p))
    counts = list(range(0, gh * gw, step)) + [gh * gw]
    values = []
    for k in counts:
        x = (canvas if insert else image).clone()
        for p in order[:k]:
            i, j = divmod(p, gw)
            src = image if insert else canvas
            x[:, patch * i : patch * i + patch, patch * j : patch * j + patch] = \
                src[:, patch * i : patch * i + patch, patch * j : patch * j + patch]
        with torch.no_grad():
            values.append(model(x[None]).softmax(-1)[0, target])
    values = torch.stack(values)
    frac = torch.tensor(counts, dtype=torch.float32) / (gh * gw)
    return values, float(((values[1:] + values[:-1]) / 2 * (frac[1:] - frac[:-1])).sum())


@pytest.mark.parametrize(("name", "step"), [("deletion", 1), ("deletion", 3), ("insertion", 2)])
def test_deletion_and_insertion_equal_a_naive_loop(name, step):
    from archs import build

    model = build("timm_vit")
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 32, generator=gen)
    maps = torch.rand(2, 4, 4, generator=gen)
    targets = torch.tensor([1, 5])
    metric = metrics.get(name)(step=step, canvas="black" if name == "deletion" else "blur:2", batch_size=5)
    scores, fractions = metric.curve(model, images, targets, maps)
    got = metric(model, images, targets, maps)
    canvas = metric.canvas(images, __import__("caap").adapt(model).normalization)
    for b in range(2):
        values, area = _naive_curve(model, images[b], int(targets[b]), maps[b], canvas[b], name == "insertion", step)
        torch.testing.assert_close(scores[b], values, rtol=1e-4, atol=1e-5)
        assert got[b].item() == pytest.approx(area, rel=1e-4, abs=1e-6)
    assert fractions[0] == 0 and fractions[-1] == 1
    assert metrics.get(name).needs_model and metrics.get("deletion").higher_is_better is False


@pytest.mark.parametrize("name", ["positive_perturbation", "negative_perturbation"])
def test_perturbation_protocol_equals_a_naive_loop(name):
    from archs import build

    model = build("timm_vit")
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, 32, 32, generator=gen)
    maps = torch.rand(3, 4, 4, generator=gen)
    with torch.no_grad():
        targets = model(images).argmax(-1)  # clean accuracy 1 at 0 %
    metric = metrics.get(name)()
    got = metric(model, images, targets, maps)
    sign = 1 if name == "positive_perturbation" else -1
    for b in range(3):
        order = sorted(range(16), key=lambda p: (-sign * float(maps[b].flatten()[p]), p))
        correct = []
        for f in [k / 10 for k in range(10)]:
            x = images[b].clone()
            for p in order[: round(f * 16)]:
                i, j = divmod(p, 4)
                x[:, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8] = 0
            with torch.no_grad():
                correct.append(float(model(x[None]).argmax(-1)[0] == targets[b]))
        assert correct[0] == 1.0
        area = sum((correct[k] + correct[k + 1]) / 2 * 0.1 for k in range(9)) / 0.9
        assert got[b].item() == pytest.approx(area, abs=1e-6)


def test_segmentation_metrics_against_sklearn_and_hand_counts():
    from sklearn.metrics import average_precision_score, jaccard_score

    images, t, maps, masks = _case(seed=5, size=16)
    pixels = torch.nn.functional.interpolate(maps[:, None], size=(16, 16), mode="bilinear",
                                             align_corners=False)[:, 0]
    acc = metrics.get("segmentation_pixel_accuracy")()(None, images, t, maps, masks)
    miou = metrics.get("segmentation_miou")()(None, images, t, maps, masks)
    ap = metrics.get("segmentation_ap")()(None, images, t, maps, masks)
    for b in range(len(maps)):
        scores = pixels[b].flatten().numpy()
        scores = (scores - scores.min()) / (scores.max() - scores.min())
        truth = masks[b].flatten().numpy()
        pred = scores > scores.mean()
        assert acc[b].item() == pytest.approx((pred == truth).mean(), abs=1e-6)
        assert miou[b].item() == pytest.approx(jaccard_score(truth, pred, average="macro"), abs=1e-6)
        assert ap[b].item() == pytest.approx(average_precision_score(truth, scores), abs=1e-5)


def test_randomization_cascade_against_scipy_and_leaves_the_model_untouched():
    from archs import build
    from modelstate import assert_untouched, snapshot
    from scipy.stats import spearmanr

    from caap import methods

    model = build("timm_vit")
    before = snapshot(model)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 2])
    maps = methods.get("gae")(model).explain(images, target=targets).scores
    metric = metrics.get("randomization")(
        explain=lambda m, x, t: methods.get("gae")(m).explain(x, target=t).scores, levels=[0, 2, 4], seed=1)
    curve = metric.curve(model, images, targets, maps)
    assert curve.shape == (2, 3)
    other = methods.get("gae")(metric.randomized(model, 4)).explain(images, target=targets).scores
    for b in range(2):
        assert curve[b, 2].item() == pytest.approx(spearmanr(maps[b].flatten(), other[b].flatten())[0], abs=1e-5)
    assert torch.equal(metric(model, images, targets, maps), curve.mean(1))
    assert_untouched(model, before)
    assert metrics.get("randomization").higher_is_better is False


def test_metric_specs_with_options():
    m = metrics.build("deletion:step=4:canvas=blur:2")
    assert m.step == 4 and m.canvas.describe() == "blur:2"
    assert metrics.get("insertion:step=2") is metrics.get("insertion")
    with pytest.raises(CaapError, match="expected KEY=VALUE"):
        metrics.build("deletion:4")
    with pytest.raises(CaapError, match="metric 'pointing_game:step=2'"):
        metrics.build("pointing_game:step=2")


def test_localisation_at_the_methods_own_resolution_by_hand():
    """A 4 x 4 image on a 2 x 2 patch grid. Pixel map: 4 at pixel (0, 0), 1 on all of patch 3. Mask: the left
    column of patch 0 and all of patch 3. Pixel relevance mass: (4 + 4) / 8 = 1. On the patch grid: patch 0
    averages 1 and is half covered, patch 3 averages 1 and is covered: (0.5 + 1) / 2 = 0.75. Energy pointing game
    with the box of pixels (0, 0)-(0, 1): pixel 4 / 8 = 0.5; patch: the box covers 2 of patch 0's 4 pixels:
    (1 · 0.5) / 2 = 0.25. A patch map gives the same value at both resolutions."""
    from caap.adapters import ClassifierAdapter

    model = ClassifierAdapter(torch.nn.Flatten(), cell=2)  # only its 2 x 2 grid is used
    pixel_map = torch.zeros(1, 4, 4)
    pixel_map[0, 0, 0] = 4.0
    pixel_map[0, 2:, 2:] = 1.0
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, 0] = True
    mask[0, 2:, 2:] = True
    images, t = torch.zeros(1, 3, 4, 4), torch.tensor([0])
    mass = {r: metrics.build(f"relevance_mass:resolution={r}")(model, images, t, pixel_map, mask) for r in
            ("pixel", "patch")}
    assert mass["pixel"].item() == pytest.approx(1.0) and mass["patch"].item() == pytest.approx(0.75)
    box = torch.zeros(1, 4, 4, dtype=torch.bool)
    box[0, 0, :2] = True
    energy = {r: metrics.build(f"energy_pointing_game:resolution={r}")(model, images, t, pixel_map, box) for r in
              ("pixel", "patch")}
    assert energy["pixel"].item() == pytest.approx(0.5) and energy["patch"].item() == pytest.approx(0.25)
    patch_map = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    same = [metrics.build(f"relevance_mass:resolution={r}")(None, images, t, patch_map, mask) for r in
            ("pixel", "patch")]
    assert same[0].item() == pytest.approx(same[1].item()) == pytest.approx(0.75)
    with pytest.raises(CaapError, match="needs the model"):
        metrics.build("relevance_mass:resolution=patch")(None, images, t, pixel_map, mask)
    with pytest.raises(CaapError, match="resolution must be"):
        metrics.build("relevance_mass:resolution=token")
