"""The batched engine against the naive one-forward-per-patch loop (caap.methods.caap.reference), on every adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from archs import ARCHS, GRID, IMG, PREFIX, block_list, build, explainable, logits_fn

from caap import CAAP, Normalization
from caap.core.contexts import Blur, Noise
from caap.errors import CaapError
from caap.methods.caap import naive_caap

N_PATCHES = GRID[0] * GRID[1]


def images(n: int = 2, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(seed))


def naive(name, model, x, context, layers, target, score=lambda logits: logits, groups=None):
    """Naive maps for every image: [B, gh, gw]."""
    maps = [
        naive_caap(logits_fn(name, model), block_list(name, model), x[b : b + 1], context[b : b + 1], layers,
                   int(target[b]), PREFIX[name], score, None if groups is None else groups[b])
        for b in range(x.shape[0])
    ]
    return torch.stack(maps).view(x.shape[0], *GRID)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_engine_equals_naive_loop_on_every_adapter(name):
    model = build(name)
    x = images()
    layers = [1, 3]  # non-contiguous: the block between them runs freely
    att = CAAP(explainable(name, model), layers=layers, batch_size=5).explain(x)
    expected = naive(name, model, x, torch.zeros_like(x), layers, att.target)
    assert att.scores.shape == (2, *GRID) and att.scores.dtype == torch.float32
    assert att.scores.abs().max() > 1e-2  # a meaningful comparison
    close(att.scores, expected)


@pytest.mark.parametrize("name", ["timm_vit", "timm_registers", "timm_deit3_no_embed_class"])
def test_inplace_block_path_is_taken_where_it_can_and_stays_exact(name):
    model = build(name)
    explainer = CAAP(explainable(name, model), layers=[1, 2], batch_size=7)
    original, taken = explainer.adapter.run_block_inplace, []

    def spy(index, z, workspace):
        out = original(index, z, workspace)
        taken.append(out is not None)
        return out

    explainer.adapter.run_block_inplace = spy
    x = images()
    att = explainer.explain(x)
    # plain blocks run in place; DeiT-3's layer scale falls back to the module's own forward
    assert taken and all(taken) == (name != "timm_deit3_no_embed_class") and any(taken) == all(taken)
    close(att.scores, naive(name, model, x, torch.zeros_like(x), [1, 2], att.target))


@pytest.mark.parametrize("name", ["timm_vit", "timm_deit_distilled", "hf_dinov2_registers"])
def test_default_layers_and_target(name):
    model = build(name)
    x = images(1)
    explainer = CAAP(explainable(name, model))
    assert explainer.layers == [1]  # range(4 // 3, 2 * 4 // 3)
    att = explainer.explain(x)
    with torch.inference_mode():
        assert att.target.tolist() == logits_fn(name, model)(x).argmax(-1).tolist()
    close(att.scores, naive(name, model, x, torch.zeros_like(x), [1], att.target))


@pytest.mark.parametrize("batch_size", [1, 3, 7, 16, 64, None])
def test_batch_size_invariance(batch_size):
    model = build("timm_registers")
    x = images(3)
    ref = CAAP(model, layers=[0, 2], batch_size=1).explain(x)
    att = CAAP(model, layers=[0, 2], batch_size=batch_size).explain(x)
    close(att.scores, ref.scores)
    assert torch.equal(att.target, ref.target)


def test_several_images_equal_one_at_a_time():
    model = build("timm_vit")
    x = images(3)
    explainer = CAAP(model, layers=[1, 2], batch_size=6)  # chunks straddle image boundaries
    together = explainer.explain(x)
    for b in range(3):
        close(together.scores[b], explainer.explain(x[b : b + 1]).scores[0])


def test_groups_share_one_patched_run():
    model = build("timm_vit")
    x = images(2)
    groups = torch.arange(N_PATCHES).view(GRID) // 2 % 3  # 3 groups, scattered patches
    att = CAAP(model, layers=[1, 2], groups=groups).explain(x)
    assert att.meta["patched_runs"] == 2 * 3
    per_image = groups[None].expand(2, -1, -1)
    expected = naive("timm_vit", model, x, torch.zeros_like(x), [1, 2], att.target, groups=per_image)
    close(att.scores, expected)
    for g in range(3):
        values = att.scores[0][groups == g]
        assert torch.all(values == values[0])


def test_per_image_groups_and_superpatches():
    model = build("timm_avg_fc_norm")
    x = images(2)
    rows, cols = torch.meshgrid(torch.arange(GRID[0]), torch.arange(GRID[1]), indexing="ij")
    superpatch = (rows // 2) * (GRID[1] // 2) + cols // 2  # 2x2 superpatches
    per_image = torch.stack([superpatch, torch.zeros(GRID, dtype=torch.long)])  # image 1: one group of all
    explainer = CAAP(model, layers=[2])
    att = explainer.explain(x, groups=per_image)
    assert att.meta["patched_runs"] == 4 + 1
    close(att.scores, naive("timm_avg_fc_norm", model, x, torch.zeros_like(x), [2], att.target, groups=per_image))


def test_all_classes_cost_nothing_extra_and_match_per_class_calls():
    model = build("hf_deit_teacher")
    x = images(2)
    explainer = CAAP(model, layers=[1, 2])
    att = explainer.explain(x, all_classes=True)
    assert att.class_scores.shape == (2, 10, *GRID)
    assert att.meta["patched_runs"] == 2 * N_PATCHES
    close(att.class_scores[torch.arange(2), att.target], att.scores)
    for k in (0, 7):
        close(att.class_scores[:, k], explainer.explain(x, target=k).scores)


@pytest.mark.parametrize("target", [4, [1, 9], torch.tensor([3, 0])])
def test_target_forms(target):
    model = build("timm_vit")
    x = images(2)
    att = CAAP(model, layers=[1]).explain(x, target=target)
    expected = torch.as_tensor(target).expand(2)
    assert att.target.tolist() == expected.tolist()
    close(att.scores, naive("timm_vit", model, x, torch.zeros_like(x), [1], expected))


def _scipy_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from scipy.ndimage import gaussian_filter

    arr = x.numpy()
    out = [[gaussian_filter(arr[b, c], sigma, mode="nearest", truncate=3.0) for c in range(3)] for b in range(len(arr))]
    return torch.from_numpy(np.array(out)).to(x.dtype)


def test_every_context_against_an_independent_construction():
    model = build("timm_vit")
    x = images(2)
    norm = Normalization((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    black = ((0 - torch.tensor(norm.mean)) / torch.tensor(norm.std)).view(1, 3, 1, 1).expand_as(x)
    user = torch.randn(3, IMG, IMG, generator=torch.Generator().manual_seed(9))
    noise = torch.randn(3, IMG, IMG, generator=torch.Generator().manual_seed(5)) * 0.5
    cases = {
        "mean": torch.zeros_like(x),
        "black": black,
        Blur(2.0): _scipy_blur(x, 2.0),
        "blur:2": _scipy_blur(x, 2.0),
        Noise(0.5, seed=5): noise.expand_as(x),
        "noise:0.5:5": noise.expand_as(x),
        user: user.expand_as(x),
        user.expand(2, -1, -1, -1) * 2: user.expand_as(x) * 2,
    }
    for context, image in cases.items():
        att = CAAP(model, layers=[1, 2], context=context, normalization=norm).explain(x)
        close(att.scores, naive("timm_vit", model, x, image.contiguous(), [1, 2], att.target))


@pytest.mark.parametrize("score", ["logit", "prob", "logprob", "callable"])
def test_every_score_against_naive(score):
    model = build("hf_vit")
    x = images(2)
    fns = {"logit": lambda z: z, "prob": lambda z: z.softmax(-1), "logprob": lambda z: z.log_softmax(-1),
           "callable": lambda z: (z[:, :5] - z[:, 5:]) * 0.5}
    option = fns["callable"] if score == "callable" else score
    att = CAAP(model, layers=[1, 2], score=option).explain(x, target=[1, 3])
    close(att.scores, naive("hf_vit", model, x, torch.zeros_like(x), [1, 2], att.target, score=fns[score]))


@pytest.mark.parametrize(("name", "rows"), [("timm_vit", 1), ("timm_deit_distilled", 2), ("timm_avg_fc_norm", 0),
                                             ("timm_map_pool", 0), ("hf_vit", 0)])
def test_last_block_computes_only_the_rows_the_head_reads(name, rows):
    """The exact shortcut (checked against the naive loop above) is taken where the head allows it."""
    model = build(name)
    x = images(1)
    att = CAAP(model, layers=[3]).explain(x)  # the last block is patched too
    assert att.meta["last_block_rows"] == rows
    close(att.scores, naive(name, model, x, torch.zeros_like(x), [3], att.target))


def test_deterministic_and_meta():
    model = build("timm_vit")
    x = images(2)
    explainer = CAAP(model, layers=[1, 2], context="noise")
    a, b = explainer.explain(x), explainer.explain(x)
    assert torch.equal(a.scores, b.scores)
    assert a.meta["layers"] == [1, 2] and a.meta["context"] == "noise:1:0" and a.meta["score"] == "logit"
    assert a.meta["context_score"].shape == (2,) and a.meta["source_score"].shape == (2,)
    assert a.meta["patched_runs"] == 2 * N_PATCHES


def test_upsample_and_attribute_shapes():
    model = build("timm_vit")
    x = images(2)
    explainer = CAAP(model, layers=[1])
    att = explainer.explain(x)
    assert att.upsample().shape == (2, IMG, IMG)
    assert att.upsample(64, mode="nearest").shape == (2, 64, 64)
    nearest = att.upsample(mode="nearest")
    assert torch.equal(nearest[:, ::8, ::8], att.scores)  # patch blocks keep their value
    pixels = explainer.attribute(x, target=2)
    assert pixels.shape == (2, 1, IMG, IMG)
    with pytest.raises(CaapError, match="upsample mode 'cubic'"):
        att.upsample(mode="cubic")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fast_modes_agree_with_float32(dtype):
    model = build("timm_vit")
    x = images(2)
    exact = CAAP(model, layers=[1, 2]).explain(x)
    fast = CAAP(model, layers=[1, 2], dtype=dtype).explain(x, target=exact.target)
    assert fast.scores.dtype == torch.float32
    corr = torch.corrcoef(torch.stack([exact.scores.flatten(), fast.scores.flatten()]))[0, 1]
    assert corr > 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(layers=[]), "at least one block"),
        (dict(layers=[1, 4]), r"layer 4 is out of range.*4 blocks.*0\.\.3"),
        (dict(layers=["a"]), "integer block indices"),
        (dict(context="fog"), "unknown context 'fog'"),
        (dict(context="blur:-1"), "blur sigma must be a positive"),
        (dict(context="blur:x"), "must be numbers"),
        (dict(score="rank"), "unknown score 'rank'"),
        (dict(batch_size=0), "batch_size must be a positive int"),
        (dict(dtype=torch.int8), "dtype torch.int8 is not supported"),
    ],
)
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(CaapError, match=message):
        CAAP(build("timm_vit"), **kwargs)


def test_bad_call_inputs_are_rejected():
    explainer = CAAP(build("timm_vit"), layers=[1])
    x = images(2)
    with pytest.raises(CaapError, match=r"target 10 is out of range.*0\.\.9"):
        explainer.explain(x, target=10)
    with pytest.raises(CaapError, match="3 entries, expected one per image"):
        explainer.explain(x, target=[1, 2, 3])
    with pytest.raises(CaapError, match=r"groups has shape \(3, 3\)"):
        explainer.explain(x, groups=torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(CaapError, match="floating point"):
        explainer.explain(x.to(torch.int64))
    with pytest.raises(CaapError, match=r"context tensor has shape \(3, 16, 16\)"):
        CAAP(build("timm_vit"), context=torch.zeros(3, 16, 16)).explain(x)
    with pytest.raises(CaapError, match=r"score function must return a tensor \[N=2, K\]"):
        CAAP(build("timm_vit"), score=lambda z: z.sum(-1)).explain(x)


def test_registry_returns_caap():
    from caap import methods

    assert "caap" in methods.available()
    assert methods.get("caap") is CAAP
    with pytest.raises(CaapError, match="unknown method 'nope'"):
        methods.get("nope")
