"""CAAP in both directions (issue 25, docs/METHOD.md): denoising (the paper), noising and their mean, against the naive
hook loop on every adapter, the identity that ties them, and the fast mode for noising checked as the denoising
one is (its error falls with the square of the perturbation)."""

from __future__ import annotations

import pytest
import torch
from archs import ARCHS, GRID, IMG, PREFIX, block_list, build, explainable, logits_fn
from tolerance import assert_rounding_close

from caap import CAAP, Exact, Fast, FastCAAP, methods
from caap.core.groups import superpatch_groups
from caap.methods.caap import naive_caap

VIEWED = [name for name in ARCHS if name != "generic_torch"]


def images(n: int = 2, seed: int = 7) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(seed))


def naive(name, model, x, context, layers, target, direction, groups=None):
    return torch.stack([
        naive_caap(logits_fn(name, model), block_list(name, model), x[b : b + 1], context[b : b + 1], layers,
                   int(target[b]), PREFIX[name], groups=groups, direction=direction)
        for b in range(x.shape[0])]).view(x.shape[0], *GRID)


@pytest.mark.parametrize("direction", ["noise", "both"])
@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_direction_equals_the_naive_loop_on_every_adapter(name, direction):
    model = build(name)
    x = images()
    context = torch.randn(x.shape, generator=torch.Generator().manual_seed(8))
    att = CAAP(explainable(name, model), layers=[1, 3], context=context, direction=direction).explain(x)
    expected = naive(name, model, x, context, [1, 3], att.target, direction)
    torch.testing.assert_close(att.scores, expected, rtol=1e-4, atol=1e-4)
    assert att.meta["direction"] == direction


def test_noising_is_denoising_with_the_roles_swapped():
    """noise(x, x̃) = −denoise(source = x̃, context = x), to float rounding, class by class."""
    model = build("timm_registers")
    x = images()
    ctx = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    noise = CAAP(model, layers=[1, 2], context=ctx, direction="noise").explain(x, target=[2, 5], all_classes=True)
    swapped = torch.cat([CAAP(model, layers=[1, 2], context=x[b : b + 1]).explain(
        ctx[b : b + 1], target=[[2, 5][b]], all_classes=True).class_scores for b in range(2)])
    torch.testing.assert_close(noise.class_scores, -swapped, rtol=1e-5, atol=1e-5)
    both = CAAP(model, layers=[1, 2], context=ctx, direction="both").explain(x, target=[2, 5])
    denoise = CAAP(model, layers=[1, 2], context=ctx).explain(x, target=[2, 5])
    torch.testing.assert_close(both.scores, (denoise.scores + noise.scores) / 2, rtol=1e-5, atol=1e-6)


def test_groups_classes_and_batches_in_every_direction():
    model = build("timm_avg_fc_norm")
    x = images(3)
    groups = superpatch_groups(GRID, 2)
    for direction in ("noise", "both"):
        explainer = CAAP(model, layers=[1, 2], context="mean", direction=direction)
        grouped = explainer.explain(x, groups=groups, classes=[0, 4])
        expected = naive("timm_avg_fc_norm", model, x, torch.zeros_like(x), [1, 2], grouped.target, direction,
                         groups=groups)
        torch.testing.assert_close(grouped.scores, expected, rtol=1e-4, atol=1e-4)
        alone = explainer.explain(x[1:2], target=grouped.target[1:2], groups=groups, classes=[0, 4])
        assert_rounding_close(alone.class_scores[0], grouped.class_scores[1], dims=3)


def near(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x + eps * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name", VIEWED)
def test_the_fast_mode_for_noising_is_first_order_on_every_adapter(name):
    """Exact minus fast noising is O(eps²) while the map is O(eps): the relative error falls with eps. A wrong
    swap (the base run's gradients taken from the context run, say) would leave an O(1) error."""
    model = explainable(name, build(name))
    x = images()
    errors = []
    for eps in (0.04, 0.01):
        ctx = near(x, eps)
        exact = CAAP(model, layers=[1, 2], context=ctx, direction="noise").explain(x)
        fast = FastCAAP(model, layers=[1, 2], context=ctx, direction="noise").explain(x, target=exact.target)
        errors.append(float((exact.scores - fast.scores).abs().max() / exact.scores.abs().max()))
    coarse, fine = errors
    assert fine < 0.08, errors
    assert coarse / fine > 2.5 or fine < 3e-3, errors


def test_registered_presets_take_the_direction():
    model = build("timm_vit")
    x = images(1)
    for name in ("caap", "caap_fast", "caap_adaptive"):
        att = methods.build(f"{name}:direction=both", model).explain(x)
        assert att.meta["direction"] == "both" and torch.isfinite(att.scores).all()
    assert CAAP(model, strategy=Exact("noise")).direction.value == "noise"
    assert CAAP(model, strategy=Fast("both")).describe().startswith("CAAP (fast, both)")


@pytest.mark.parametrize("depth, bands", [(12, {"denoise": "4:8", "noise": "2:6", "both": "4:8"}),
                                          (6, {"denoise": "2:4", "noise": "1:3", "both": "2:4"}),
                                          (4, {"denoise": "1:2", "noise": "0:2", "both": "1:2"}),
                                          (1, {"denoise": "0:1", "noise": "0:1", "both": "0:1"})])
def test_each_directions_defaults_are_the_sweeps_and_reach_the_maps(depth, bands):
    """Without a band or a context, each direction takes the one the sweep chose (docs/DIRECTIONS.md, written out
    here by hand): denoise the paper's middle third and mean context, noise 2:6 of 12 blocks, both the middle third
    with the blurred context; the maps are those of the same options given explicitly, bit for bit."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=IMG, patch_size=IMG // GRID[0], embed_dim=16, depth=depth, num_heads=2,
                              num_classes=10).eval()
    x = images(1)
    contexts = {"denoise": "mean", "noise": "mean", "both": "blur"}
    for direction, band in bands.items():
        default = CAAP(model, direction=direction)
        start, stop = (int(v) for v in band.split(":"))
        assert default.layers == list(range(start, stop))
        assert default.context.describe() == CAAP(model, context=contexts[direction]).context.describe()
        explicit = CAAP(model, direction=direction, layers=band, context=contexts[direction])
        assert torch.equal(default.explain(x, target=[3]).scores, explicit.explain(x, target=[3]).scores)
        spec = methods.build(f"caap_fast:direction={direction}", model)
        assert spec.layers == default.layers and spec.context.describe() == default.context.describe()
    given = CAAP(model, direction="both", layers="0:1", context="black")  # what the call gives wins
    assert given.layers == [0] and given.context.describe() == CAAP(model, context="black").context.describe()


def test_a_models_card_band_is_every_directions_band():
    from caap.adapters.demo import load_demo_model

    model = load_demo_model()
    for direction in ("denoise", "noise", "both"):
        assert CAAP(model, direction=direction).layers == [0, 1, 2, 3]  # the demo card's band
