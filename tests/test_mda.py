"""MDA (issue 14) against independent references: a one-composite-at-a-time transcription of the authors' search
(``find_insertion_patches`` / ``find_deletion_patches`` / ``MASMetric`` structure, torchvision resizes, scipy
convolution), cvxopt for the curve projection, and the authors' SLIC segments and Bi-Attn maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from archs import GRID, IMG, build
from conftest import DEIT_TINY
from test_reference_maps import REFERENCE
from tolerance import assert_rounding_close

from caap import methods
from caap.errors import CaapError
from caap.methods.curves import convex_fit, kernel_blur

needs_reference = pytest.mark.skipif(not (REFERENCE / "inputs.npy").is_file() or not DEIT_TINY.is_file(),
                                     reason=f"reference maps not found at {REFERENCE}")


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(11))


def cvxopt_projection(y: np.ndarray, convex: bool) -> np.ndarray:
    """The authors' ``normalize_curve``: the same QP given to cvxopt's interior-point solver."""
    cvxopt = pytest.importorskip("cvxopt")
    cvxopt.solvers.options["show_progress"] = False
    n = len(y)
    rows = np.arange(n - 2)
    second = np.zeros((n - 2, n))
    s = 1.0 if convex else -1.0
    second[rows, rows], second[rows, rows + 1], second[rows, rows + 2] = -s, 2 * s, -s
    g = np.vstack([-np.eye(n), np.eye(n), second])
    h = np.concatenate([np.zeros(n), np.ones(n), np.zeros(n - 2)])
    a = np.zeros((2, n))
    a[0, 0] = a[1, -1] = 1
    m = cvxopt.matrix
    sol = cvxopt.solvers.qp(m(2 * np.eye(n)), m(-2 * y), m(g), m(h), m(a), m(np.array([y[0], y[-1]]), (2, 1), "d"))
    return np.array(sol["x"]).ravel()


@pytest.mark.parametrize("convex", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_convex_fit_is_the_qp_optimum(convex, seed):
    """Our exact least-distance solution is feasible, keeps the ends, and is at least as good as cvxopt's
    (whose interior point stops at its tolerance: the two differ by up to ~2e-3)."""
    rng = np.random.default_rng(seed)
    y = np.clip(1 - np.cumsum(rng.exponential(1, 197)) / 197 * rng.uniform(0.5, 3) + rng.normal(0, 0.05, 197), 0, 1)
    y = np.minimum.accumulate(y) if convex else 1 - np.minimum.accumulate(y)[::-1]
    ours, theirs = convex_fit(y, convex=convex), cvxopt_projection(y, convex)
    second = ours[:-2] - 2 * ours[1:-1] + ours[2:]
    assert (second * (1 if convex else -1) >= -1e-9).all()
    assert ours.min() >= 0 and ours.max() <= 1 and ours[0] == y[0] and ours[-1] == y[-1]
    assert ((ours - y) ** 2).sum() <= ((theirs - y) ** 2).sum() + 1e-9
    np.testing.assert_allclose(ours, theirs, atol=5e-3)


def test_convex_fit_keeps_a_feasible_curve():
    y = np.linspace(1, 0, 20) ** 2
    np.testing.assert_array_equal(convex_fit(y), y)


def test_kernel_blur_is_a_zero_padded_convolution():
    from scipy.ndimage import convolve, gaussian_filter

    x = images(1)
    delta = np.zeros((7, 7))
    delta[3, 3] = 1
    kernel = gaussian_filter(delta, 7)  # the authors' gkern(7, 7)
    expected = np.stack([convolve(c, kernel[::-1, ::-1], mode="constant") for c in x[0].double().numpy()])
    torch.testing.assert_close(kernel_blur(x, 7)[0], torch.from_numpy(expected).float(), rtol=1e-5, atol=1e-6)


# --- the search, written out as the authors' code runs it: one composite per forward ---------------------------
def naive_mda(model, x, target, order_map, labels, *, candidates, cutoff=0.9, kappa=0.005, gamma=0.0,
              blur_start=3, blur_step=4, blur_prob=0.01):
    from torchvision.transforms import InterpolationMode, Resize

    def prob(image):
        with torch.no_grad():
            return model(image[None]).softmax(-1)[0, target].item()

    side = x.shape[-1]
    n = int(labels.max()) + 1
    flat_labels = labels.flatten()
    coords = [torch.where(flat_labels == s)[0] for s in range(n)]

    def put(canvas, source, seg):
        canvas.reshape(3, -1)[:, coords[seg]] = source.reshape(3, -1)[:, coords[seg]]

    p_x = prob(x)
    klen = blur_start
    while True:
        blurred = kernel_blur(x[None], klen)[0]
        p_blur = prob(blurred)
        if p_blur <= blur_prob or klen + blur_step > side:
            break
        klen += blur_step
    p_black = prob(torch.zeros_like(x))

    sal = Resize(side)(order_map[None])  # the authors' input map, bilinear to the image
    sal = Resize(side, InterpolationMode.NEAREST_EXACT)(Resize(GRID[0])(sal))[0].abs().flatten()
    seg_sal = torch.stack([sal[coords[s]].mean() for s in range(n)])
    ascending = torch.argsort(seg_sal, stable=True).tolist()

    def norm(p, low):
        return min(max((p - low) / abs(p_x - low), 0.0), 1.0)

    def tried(start, sel):  # one composite per candidate, one forward each
        resp = []
        for s in sel:
            temp = start.clone()
            put(temp, x, s)
            resp.append(prob(temp))
        return resp

    start, inserted = blurred.clone(), []
    while len(inserted) < n:  # insertion: the best of the next `candidates`
        sel = [s for s in ascending[::-1] if s not in inserted][:candidates]
        resp = tried(start, sel)
        k = int(np.argmax(resp))
        put(start, x, sel[k])
        inserted.append(sel[k])
        if resp[k] >= cutoff or norm(resp[k], p_blur) >= cutoff:
            break
    worst = [-1] * n
    worst[n - len(inserted):] = inserted[::-1]
    mr = [0.0] * n
    start = torch.zeros_like(x)
    for step in range(n - len(inserted)):  # deletion: the worst insertion, the prefix forced last
        sel = [s for s in ascending if s not in worst][:candidates]
        resp = tried(start, sel)
        k = int(np.argmin(resp))
        put(start, x, sel[k])
        worst[step], mr[step] = sel[k], resp[k]
    for step in range(n - len(inserted), n):
        put(start, x, worst[step])
        mr[step] = prob(start)
    curve = np.array([p_x, *mr[::-1]])
    curve = np.minimum.accumulate([norm(p, p_black) for p in curve])
    curve = convex_fit(curve)
    best = worst[::-1]

    def values(curve):
        out = torch.zeros(side * side, dtype=torch.float64)
        for i in range(1, n + 1):
            d = curve[i - 1] - curve[i]
            out[coords[best[i - 1]]] = d / len(coords[best[i - 1]]) + d * (n - i) / n
        return out

    first = values(curve).abs()
    order = torch.argsort(first, stable=True).flip(0)
    mas = []
    for start, finish, low, increasing in ((blurred, x, p_blur, True), (x, torch.zeros_like(x), p_black, False)):
        start = start.clone()
        resp = [p_blur if increasing else p_x]
        for t in range(side):
            idx = order[t * side:(t + 1) * side]
            start.reshape(3, -1)[:, idx] = finish.reshape(3, -1)[:, idx]
            resp.append(prob(start))
        normed = [norm(p, low) for p in resp]
        mas.append(np.maximum.accumulate(normed) if increasing else np.minimum.accumulate(normed))
    grid_x = np.linspace(0, 100, n + 1)
    old = np.linspace(0, 100, side + 1)
    ins, dele = np.interp(grid_x, old, mas[0]), np.interp(grid_x, old, mas[1])
    curve = convex_fit(1 - np.mean([ins, 1 - dele], axis=0))
    sparse = values(curve)
    dense = sparse.clone()
    for i in range(1, n + 1):
        px = coords[best[i - 1]]
        if sparse[px[0]] >= kappa:
            dense[px] = (n - i) / n
    dense = dense / dense.max() * sparse.max()
    out = ((1 - gamma) * sparse + gamma * dense).float().view(1, side, side)
    return Resize(side)(Resize(GRID[0])(out))[0]


@pytest.mark.parametrize(("arch", "segments", "target", "gamma"), [("timm_vit", "grid", None, 0.0),
                                                                   ("timm_registers", "slic", [3, 8], 0.5)])
def test_mda_equals_the_authors_search_written_out(arch, segments, target, gamma):
    """Both images batched through one stream equal the one-composite-at-a-time search; ``target`` is honoured
    (the authors' code always explains the top-1 class)."""
    from caap.methods.mda import grid_segments, slic_segments

    model = build(arch)
    x = images()
    explainer = methods.get("mda")(model, segments=segments, candidates=5, blur_start=3, gamma=gamma)
    att = explainer.explain(x, target=target)
    order = methods.get("bidirectional")(model).explain(x, target=att.target).scores
    for b in range(2):
        pixels = explainer.adapter.normalization.denormalize(x[b : b + 1])[0]
        labels = slic_segments(pixels, 16) if segments == "slic" else grid_segments((IMG, IMG), GRID)
        expected = naive_mda(model, x[b], int(att.target[b]), order[b], labels, candidates=5, gamma=gamma)
        scale = expected.abs().max()
        torch.testing.assert_close(att.scores[b] / scale, expected / scale, rtol=0, atol=1e-5)
    assert att.meta["forward_passes"].min() > 16


def test_mda_is_independent_of_batch_composition_and_options_are_checked():
    model = build("timm_vit")
    x = images(3)
    explainer = methods.get("mda")(model, segments="grid", candidates=3, blur_start=3, batch_size=7)
    together = explainer.explain(x, target=[1, 2, 3]).scores
    alone = torch.cat([explainer.explain(x[i : i + 1], target=[i + 1]).scores for i in range(3)])
    assert_rounding_close(together, alone)
    for bad in ({"segments": "quick"}, {"gamma": 2}, {"order": "mda"}, {"order": "nope"}, {"candidates": 0}):
        with pytest.raises(CaapError, match=next(iter(bad))):
            methods.get("mda")(model, **bad)


@needs_reference
def test_slic_segments_blur_and_bi_attn_equal_the_authors():
    """SLIC on the [0, 1] image (skimage, compactness 10000) gives the authors' segments label for label; the blur
    search stops at their kernel sizes with their probabilities; Bi-Attn equals their
    ``Baselines.bidirectional(steps=20, start_layer=4)`` to 1e-5 of each map's maximum (measured 4e-6: the float32
    noise of the two model implementations)."""
    from caap.adapters import create_model
    from caap.methods.mda import slic_segments

    model = create_model("deit_tiny_patch16_224", DEIT_TINY)
    x = torch.from_numpy(np.load(REFERENCE / "inputs.npy"))
    targets = json.loads((REFERENCE / "meta.json").read_text())["mda_targets"]
    explainer = methods.get("bidirectional")(model)
    expected = torch.from_numpy(np.load(REFERENCE / "mda_input_bidirectional.npy"))
    got = explainer.explain(x, target=targets).scores
    scale = expected.flatten(1).abs().amax(1)[:, None, None]
    torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=1e-5)
    segments = np.load(REFERENCE / "mda_slic_segments.npy")
    pixels = explainer.adapter.normalization.denormalize(x)
    for b in range(len(x)):
        np.testing.assert_array_equal(slic_segments(pixels[b], 196).numpy(), segments[b])
    meta = json.loads((REFERENCE / "meta.json").read_text())  # the blur substrate: kernel size and p(blur)
    with torch.no_grad():
        for b, (size, percent) in enumerate(zip(meta["mda_blur_klen"], meta["mda_blur_prob_pct"], strict=True)):
            p = model(kernel_blur(x[b : b + 1], size)).softmax(-1)[0, targets[b]].item()
            assert p * 100 == pytest.approx(percent, rel=1e-3, abs=1e-5) and p <= 0.01
            if size > 31:
                assert model(kernel_blur(x[b : b + 1], size - 4)).softmax(-1)[0, targets[b]].item() > 0.01
