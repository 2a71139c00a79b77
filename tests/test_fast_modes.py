"""Skipped patches, out-of-memory halving and coarse-to-fine refinement, against the naive loop."""

from __future__ import annotations

import math

import pytest
import torch
from archs import GRID, IMG, build
from test_engine import close, images, naive

from caap import CAAP
from caap.core.groups import superpatch_groups
from caap.errors import CaapError
from caap.methods.caap import exact

N_PATCHES = GRID[0] * GRID[1]


def test_negative_group_ids_are_not_patched():
    model = build("timm_vit")
    x = images(2)
    groups = torch.arange(N_PATCHES).view(GRID).clone()
    groups[0] = -1  # the first row is skipped
    att = CAAP(model, layers=[1, 2]).explain(x, groups=groups)
    assert att.meta["patched_runs"] == 2 * (N_PATCHES - GRID[1])
    assert att.scores[:, 0].isnan().all() and not att.scores[:, 1:].isnan().any()
    full = naive("timm_vit", model, x, torch.zeros_like(x), [1, 2], att.target)
    close(att.scores[:, 1:], full[:, 1:])


def test_out_of_memory_halves_the_chunk_and_retries(monkeypatch):
    model = build("timm_deit_distilled")
    x = images(2)
    explainer = CAAP(model, layers=[1, 3], batch_size=16)
    expected = explainer.explain(x)
    assert expected.meta["halvings"] == 0
    adapter, seen = explainer.adapter, []

    def tight(original):  # a device that holds at most 3 variants, on either block path
        def run(index, z, *args):
            seen.append(z.shape[0])
            if z.shape[0] > 3:
                raise torch.OutOfMemoryError("simulated: out of memory")
            return original(index, z, *args)
        return run

    monkeypatch.setattr(adapter, "run_block", tight(adapter.run_block))
    monkeypatch.setattr(adapter, "run_block_inplace", tight(adapter.run_block_inplace))
    att = explainer.explain(x)
    assert att.meta["batch_size"] == 2 and att.meta["halvings"] == 3  # 16 -> 8 -> 4 -> 2
    close(att.scores, expected.scores)
    assert explainer.strategy.batch_size == 16  # the halving is per call



def test_out_of_memory_with_one_variant_is_raised(monkeypatch):
    explainer = CAAP(build("timm_vit"), layers=[1], batch_size=4)
    calls = []

    def never_fits(setting, zc, *args):
        calls.append(zc.shape[0])
        raise torch.OutOfMemoryError("simulated: out of memory")

    monkeypatch.setattr(exact, "patched_chunk", never_fits)
    with pytest.raises(torch.OutOfMemoryError):
        explainer.explain(images(1))
    assert calls == [4, 2, 1]


def test_superpatch_groups():
    g = superpatch_groups((5, 3), 2)
    assert g.tolist() == [[0, 0, 1], [0, 0, 1], [2, 2, 3], [2, 2, 3], [4, 4, 5]]


@pytest.mark.parametrize("name", ["timm_vit", "hf_deit"])
def test_refine_is_exact_on_refined_patches_and_a_share_elsewhere(name):
    model = build(name)
    x = images(2)
    explainer = CAAP(model, layers=[1, 2], refine=0.25, coarse=2)
    att = explainer.explain(x)
    coarse = superpatch_groups(GRID, 2)  # 4 superpatches of 2x2 on the 4x4 grid
    n_groups = int(coarse.max()) + 1
    chosen = math.ceil(0.25 * n_groups)
    assert att.meta["patched_runs"] == 2 * (n_groups + chosen * 4)
    exact = naive(name, model, x, torch.zeros_like(x), [1, 2], att.target)
    by_group = naive(name, model, x, torch.zeros_like(x), [1, 2], att.target, groups=coarse.expand(2, *GRID))
    for b in range(2):
        group_scores = torch.stack([by_group[b][coarse == g][0] for g in range(n_groups)])
        top = int(group_scores.argmax())
        refined = coarse == top
        close(att.scores[b][refined], exact[b][refined])
        close(att.scores[b][~refined], by_group[b][~refined] / 4)


def test_refine_everything_is_the_exact_map():
    model = build("timm_registers")
    x = images(1)
    exact = CAAP(model, layers=[2]).explain(x, all_classes=True)
    att = CAAP(model, layers=[2], refine=1.0).explain(x, all_classes=True)
    close(att.scores, exact.scores)
    close(att.class_scores, exact.class_scores)


@pytest.mark.parametrize("kwargs, message", [
    (dict(refine=0.0), "refine must be a fraction"), (dict(refine=1.5), "refine must be a fraction"),
    (dict(refine=True), "refine must be a fraction"), (dict(refine=0.5, coarse=1), "coarse must be an int"),
])
def test_refine_options_are_checked(kwargs, message):
    with pytest.raises(CaapError, match=message):
        CAAP(build("timm_vit"), **kwargs)


def test_refine_and_groups_are_exclusive():
    explainer = CAAP(build("timm_vit"), refine=0.5)
    with pytest.raises(CaapError, match="groups and refine"):
        explainer.explain(torch.zeros(1, 3, IMG, IMG), groups=torch.zeros(GRID, dtype=torch.long))


def test_compile_is_exact_and_leaves_the_model_untouched():
    from modelstate import assert_untouched, snapshot

    model = build("timm_vit")
    x = images(2)
    before = snapshot(model)
    explainer = CAAP(model, layers=[1, 2], batch_size=6, compile=True)
    att = explainer.explain(x)
    assert att.meta["compile"] is True
    close(att.scores, naive("timm_vit", model, x, torch.zeros_like(x), [1, 2], att.target))
    assert_untouched(model, before)
    with pytest.raises(CaapError, match="compile must be True or False"):
        CAAP(model, compile="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_modes_agree_with_the_cpu(dtype, mode):
    from scipy.stats import spearmanr

    model = build("timm_vit")
    x = images(2)
    exact = CAAP(model, layers=[1, 2], mode=mode).explain(x)
    att = CAAP(model, layers=[1, 2], device="cuda", dtype=dtype, mode=mode).explain(x, target=exact.target)
    assert next(model.parameters()).device.type == "cuda"  # placed once, at construction, and left there
    if dtype == torch.float32:
        close(att.scores, exact.scores)
    floor = 0.98 if dtype == torch.bfloat16 else 0.99  # bf16 keeps 8 mantissa bits (CPU autocast: 0.993)
    for b in range(2):
        assert spearmanr(att.scores[b].flatten(), exact.scores[b].flatten())[0] >= floor
