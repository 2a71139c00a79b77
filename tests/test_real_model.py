"""The real ImageNet DeiT-Tiny from ../shared/data (skipped when the data is absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DEIT_TINY, DEV_IMAGES, needs_real_data, shared_data

from caap import CAAP
from caap.cli import main
from caap.methods.caap import FastCAAP, naive_caap

pytestmark = needs_real_data

IMAGES = ["n01440764_tench.JPEG", "n01882714_koala.JPEG"]


@pytest.fixture(scope="module")
def deit():
    from caap.adapters import create_model

    return create_model("deit_tiny_patch16_224", DEIT_TINY)


@pytest.fixture(scope="module")
def batch(deit):
    from timm.data import create_transform, resolve_model_data_config

    from caap.data.images import load_image

    transform = create_transform(**resolve_model_data_config(deit))
    return torch.stack([transform(load_image(DEV_IMAGES / name)) for name in IMAGES])


def labels() -> list[int]:
    wnids = [line.split()[0] for line in (shared_data() / "imagenet_classes.txt").read_text().splitlines()]
    return [wnids.index(name.split("_")[0]) for name in IMAGES]


def test_real_deit_predicts_the_labels(deit, batch):
    from caap.adapters import adapt

    with torch.inference_mode():
        logits = deit(batch)
        assert torch.equal(adapt(deit).forward(batch), logits)
    assert logits.argmax(-1).tolist() == labels()


def test_real_deit_engine_equals_naive_loop(deit, batch):
    att = CAAP(deit, layers=range(4, 8), batch_size=64).explain(batch[:1])
    expected = naive_caap(deit, list(deit.blocks), batch[:1], torch.zeros_like(batch[:1]), [4, 5, 6, 7],
                          int(att.target[0]), 1)
    assert att.scores.shape == (1, 14, 14)
    torch.testing.assert_close(att.scores[0].flatten(), expected, rtol=1e-4, atol=1e-4)
    assert att.scores.max() > 0.1


def test_real_deit_cli_on_two_images(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", *(str(DEV_IMAGES / n) for n in IMAGES), "--model", "deit_tiny_patch16_224",
                 "--weights", str(DEIT_TINY), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [r["targets"][0] for r in results["images"]] == labels()
    assert results["images"][0]["class_names"][0] == "tench"
    for r in results["images"]:
        assert np.load(out / r["npy"]).shape == (14, 14)
        assert (out / r["png"]).stat().st_size > 10_000


FAST = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 4}, "rise": {"masks": 64},
        "tis": {"masks": 64}, "token_rise": {"masks": 64}, "extremal_perturbation": {"steps": 20},
        "bidirectional": {"steps": 4}, "mda": {"segments": "grid", "candidates": 2},
        "caap": {"groups": torch.arange(196).view(14, 14) // 14}}  # one group per row keeps CI fast


def test_every_method_on_the_real_deit(deit, batch):
    from caap import methods

    for name in methods.available():
        explainer = methods.get(name)(deit, **FAST.get(name, {}))
        att = explainer.explain(batch[:1], target=labels()[:1])
        size = (14, 14) if explainer.resolution == "patch" else (224, 224)
        assert att.scores.shape == (1, *size), name
        assert torch.isfinite(att.scores).all() and att.scores.abs().max() > 0, name


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy())[0])


def test_real_deit_bf16_maps_agree_with_fp32(deit, batch):
    """The documented agreement of the bf16 fast mode (docs/PERFORMANCE.md): Spearman >= 0.99 per image."""
    exact = CAAP(deit, layers=range(4, 8)).explain(batch)
    fast = CAAP(deit, layers=range(4, 8), dtype=torch.bfloat16).explain(batch, target=exact.target)
    for b in range(len(batch)):
        assert _spearman(fast.scores[b], exact.scores[b]) >= 0.99


def test_real_deit_coarse_to_fine_is_exact_where_it_refines(deit, batch):
    """Coarse-to-fine, CAAP(refine=0.08) (docs/PERFORMANCE.md): 65 patched runs instead of 196; exact in the 4
    best superpatches."""
    from caap.core.groups import superpatch_groups

    exact = CAAP(deit, layers=range(4, 8)).explain(batch[:1])
    fast = CAAP(deit, layers=range(4, 8), refine=0.08).explain(batch[:1], target=exact.target)
    assert fast.meta["patched_runs"] == 49 + 16 and fast.meta["refined_patches"] == 16
    groups = superpatch_groups((14, 14), 2)
    coarse = CAAP(deit, layers=range(4, 8), groups=groups).explain(batch[:1], target=exact.target).scores[0]
    group_scores = torch.stack([coarse[groups == g][0] for g in range(49)])
    refined = torch.isin(groups, group_scores.topk(4).indices)
    torch.testing.assert_close(fast.scores[0][refined], exact.scores[0][refined], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.scores[0][~refined], (coarse / 4)[~refined], rtol=1e-4, atol=1e-4)


def test_real_deit_fast_mode_ranks_patches_as_exact(deit):
    """The fast mode on real ImageNet images: Spearman >= 0.99 with exact CAAP on each image (default band)."""
    from scipy.stats import spearmanr
    from timm.data import create_transform, resolve_model_data_config

    from caap.data.images import load_image
    from caap.methods import get

    transform = create_transform(**resolve_model_data_config(deit))
    files = sorted(DEV_IMAGES.glob("*.JPEG"))[3::50]  # 4 images spread over the classes
    x = torch.stack([transform(load_image(f)) for f in files])
    exact = CAAP(deit).explain(x)
    fast = FastCAAP(deit).explain(x)
    assert torch.equal(fast.target, exact.target)
    for e, f in zip(exact.scores, fast.scores, strict=True):
        assert spearmanr(e.flatten().numpy(), f.flatten().numpy())[0] >= 0.99
    adaptive = get("caap_adaptive")(deit).explain(x)  # the fast map, then exact for its top 8 % (16 patches)
    top = fast.scores.flatten(1).topk(16, dim=1).indices
    torch.testing.assert_close(adaptive.scores.flatten(1).gather(1, top), exact.scores.flatten(1).gather(1, top),
                               rtol=1e-4, atol=1e-4)
