"""Transformer Input Sampling as its authors compute it (issue 23): the k-means against numpy's draw and
scikit-learn's Lloyd iterations, the whole method against a naive loop over the model's own modules, and the
real DeiT-Tiny against the maps and masks of the authors' own code (benchmarks/tis_reference.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from archs import GRID, IMG, build, run_on
from conftest import DEIT_TINY, needs_real_data

from caap import methods
from caap.core.kmeans import initial_points, initial_points_022, kmeans
from caap.errors import CaapError

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "benchmarks" / "results" / "tis_reference.npz"
INPUTS = ROOT.parent / "shared" / "reference" / "deit_tiny_dev8" / "inputs.npy"


def test_the_initial_centroids_are_numpys_draw():
    """The authors' k-means (fast-pytorch-kmeans 0.1.6) starts from ``np.random.choice(n, k, replace=False)``
    after the caller's ``np.random.seed``; caap draws the same points without touching the global generator."""
    state = np.random.get_state()
    try:
        for seed, n, k in ((0, 2304, 1024), (3, 50, 7), (11, 768, 768)):
            np.random.seed(seed)
            expected = np.random.choice(n, size=[k], replace=False)
            np.testing.assert_array_equal(initial_points(n, k, seed), expected)
    finally:
        np.random.set_state(state)
    with pytest.raises(CaapError, match="clusters"):
        initial_points(5, 6, 0)


def test_the_0_2_2_start_is_torchs_draw_with_repeats():
    """fast-pytorch-kmeans 0.2.2's default start: ``torch.randint(0, n, [k])`` after the caller's
    ``torch.manual_seed`` (repeats allowed); caap draws the same indices from a private generator. (Against the
    0.2.2 package itself, outside the test dependencies: the centroids were bitwise equal for seeds 0, 1, 2 on
    300 points, 120 clusters.) A repeated start leaves a cluster empty, whose centroid is then 0."""
    with torch.random.fork_rng():
        for seed, n, k in ((0, 2304, 1024), (3, 50, 7)):
            torch.manual_seed(seed)
            expected = torch.randint(0, n, [k])
            torch.testing.assert_close(initial_points_022(n, k, seed), expected)
    assert len(set(initial_points_022(2304, 1024, 0).tolist())) < 1024  # ~190 repeats
    points = torch.from_numpy(np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32))
    centroids = kmeans(points, 120, seed=0, init="0.2.2")
    assert (centroids.abs().sum(1) == 0).any() and not (kmeans(points, 120, seed=0).abs().sum(1) == 0).any()
    with pytest.raises(CaapError, match="initialisation must be one of 0.1.6, 0.2.2, got '0.3'"):
        kmeans(points, 5, init="0.3")


def test_kmeans_equals_scikit_learns_lloyd_iterations_from_the_same_start():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (6, 3))
    points = (centres[rng.integers(0, 6, 300)] + rng.normal(0, 0.5, (300, 3))).astype(np.float32)
    ours = kmeans(torch.from_numpy(points), 6, seed=2, tol=0.0).numpy()
    start = points[initial_points(300, 6, 2)]
    theirs = KMeans(6, init=start, n_init=1, algorithm="lloyd", tol=0.0, max_iter=100).fit(points).cluster_centers_
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)



def naive_tis(model, x: torch.Tensor, target: int, masks: int, keep: float, seed: int) -> torch.Tensor:
    """TIS written out step by step: block outputs by forward hooks, Lloyd's k-means as plain loops, one forward
    per mask."""
    outputs = []
    handles = [block.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for block in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    points = torch.cat(outputs, -1)[0, model.num_prefix_tokens :].T.double().numpy()  # [L·D, P]
    centroids = points[initial_points(len(points), masks, seed)].copy()
    for _ in range(100):
        closest = np.array([np.argmin(((centroids - p) ** 2).sum(1)) for p in points])
        update = np.array([points[closest == j].mean(0) if (closest == j).any() else np.zeros(points.shape[1])
                           for j in range(masks)])
        change = ((update - centroids) ** 2).sum()
        centroids = update
        if change <= 1e-4:
            break
    n = points.shape[1]
    total, count = torch.zeros(n), torch.zeros(n)
    with torch.no_grad():
        for centroid in centroids:
            kept = np.argsort(-centroid, kind="stable")[: int(keep * n)].tolist()
            total[kept] += run_on(model, x, kept).softmax(-1)[0, target]
            count[kept] += 1
    saliency = total / count.clamp(min=1)
    saliency = saliency - saliency.min()
    return (saliency / saliency.max()).view(GRID)


def test_tis_equals_a_naive_loop_and_does_not_depend_on_the_batch():
    model = build("timm_registers")  # 4 prefix tokens
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(5))
    explainer = methods.get("tis")(model, masks=10, keep=0.5, seed=1, batch_size=7)
    att = explainer.explain(x, target=[3, 8])
    for b, c in enumerate([3, 8]):
        torch.testing.assert_close(att.scores[b], naive_tis(model, x[b : b + 1], c, 10, 0.5, 1), rtol=1e-4,
                                   atol=1e-5)
    alone = explainer.explain(x[1:], target=[8])
    torch.testing.assert_close(alone.scores[0], att.scores[1])
    assert att.meta["masks"] == 10 and att.meta["tokens_per_mask"] == GRID[0] * GRID[1] // 2
    assert float(att.scores.min()) == 0.0 and float(att.scores.amax((1, 2)).min()) == 1.0  # min-max scaled


def test_tis_options_are_checked_and_small_models_get_one_cluster_per_channel():
    model = build("timm_vit")
    for bad in ({"masks": 0}, {"keep": 1.5}, {"seed": "a"}, {"normalise": "yes"}, {"tol": -1}):
        with pytest.raises(CaapError):
            methods.get("tis")(model, **bad)
    channels = len(model.blocks) * model.embed_dim
    att = methods.get("tis")(model, masks=channels + 50).explain(torch.randn(1, 3, IMG, IMG))
    assert att.meta["masks"] == channels


@needs_real_data
@pytest.mark.skipif(not (REFERENCE.is_file() and INPUTS.is_file()), reason="no TIS reference or reference inputs")
def test_the_real_deit_tiny_equals_the_authors_code():
    """benchmarks/tis_reference.py ran the authors' TIS (their k-means package, numpy seeded with 0) on the 8
    reference inputs: caap's masks are the same token sets on every image, and its maps equal theirs to float
    tolerance (two images here; all eight in the script's output)."""
    from caap.adapters import create_model

    ref = np.load(REFERENCE)
    masks = np.unpackbits(ref["masks"], axis=-1)[..., : int(ref["mask_tokens"])].astype(bool)  # [8, 1024, 196]
    model = create_model("deit_tiny_patch16_224", DEIT_TINY)
    inputs = torch.from_numpy(np.load(INPUTS))[ref["images"]]
    explainer = methods.get("tis")(model, seed=int(ref["seed"]))
    for k in range(len(inputs)):
        with torch.no_grad():
            activations = explainer._forward(inputs[k : k + 1]).cache[1][0]
        kept = explainer.token_masks(activations, 196)
        ours = torch.zeros(kept.shape[0], 196, dtype=torch.bool).scatter_(1, kept, True).numpy()
        np.testing.assert_array_equal(ours, masks[k])
    att = explainer.explain(inputs[:2], target=ref["targets"][:2].tolist())
    np.testing.assert_allclose(att.scores.numpy(), ref["maps"][:2], rtol=1e-4, atol=1e-5)
