"""Metric-Driven Attributions (Walker, Jha & Ewetz, ICLR 2025, "Metric-Driven Attributions for Vision
Transformers"), as the authors' code (chasewalker26/MDA-Metric-Driven-Attributions-for-ViT, 4ec5108) computes it,
for any target and several images at once.

MDA does not explain by a model-internal rule: it **searches** for the segment order that scores best on the
insertion and deletion metrics, then sets each segment's value from the metric curves. It therefore optimises
the very metrics (insertion, deletion, MAS) it is scored on; see docs/BASELINES.md.

For each image and its target ``c`` (all scores: the softmax probability of ``c``):

1. Segments: SLIC (``segments="slic"``: as many segments as patches, compactness 10000 — nearly the patch
   grid) or the patch grid itself (``"grid"``). Candidates are ordered by an input attribution (``order``,
   by default Bi-Attn) averaged over each segment after the authors' resampling (to the patch grid, bilinear
   with antialias, nearest back up).
2. Blur substrate: :func:`caap.methods.curves.kernel_blur` of size 31, 35, … until ``p(blur) <= blur_prob``.
3. Insertion search from the blurred image: each step inserts, of the ``candidates`` best-ranked unused
   segments, the one that maximises ``p``; it stops at the first step whose ``p`` or normalised ``(p - p_blur)
   / |p_x - p_blur|`` reaches ``cutoff``. This prefix is the most relevant set.
4. Deletion search from the mean colour (zero): a greedy *worst* insertion order (argmin among the
   ``candidates`` lowest-ranked unused segments), the insertion prefix forced last in reverse; reversed, it is
   the best deletion order. Its curve is normalised, made monotone and projected on convex curves
   (:func:`caap.methods.curves.convex_fit`); as in the authors' code, index ``k >= 1`` of that curve holds the
   response with ``k - 1`` segments deleted.
5. The ``i``-th segment of that order gets ``d_i / |seg_i| + d_i (n - i) / n`` (``d_i`` the curve's drop).
   That map's MAS insertion (blur) and deletion (zero) curves, ``W`` pixels per step, normalised and monotone,
   are resampled to ``n + 1`` points, averaged as a deletion curve, projected again, and give the final values
   by the same formula (``gamma = 0``, sparse); the dense map is ``(n - i) / n`` where the sparse value is at
   least ``kappa`` (else the sparse value), rescaled to the sparse maximum; the output mixes
   ``(1 - gamma) sparse + gamma dense``.
6. ``smooth``: the authors' returned map, resized to the patch grid (bilinear, antialias) and back
   (bilinear); otherwise the map constant on each segment.

The searches of all images in a call run as one batch stream: every image's steps are generators whose
composites go through the model together (``batch_size`` images per forward).
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch
import torch.nn.functional as F

from caap.core.budget import check_batch_size, module_batch_size
from caap.core.state import autocast
from caap.errors import CaapError
from caap.methods.base import METHODS, Explainer, Maps, register
from caap.methods.curves import convex_fit, kernel_blur, running_normalised

Search = Generator[torch.Tensor, torch.Tensor, object]  # yields composites [k, 3, H, W], receives p [k]


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise CaapError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _count(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CaapError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def slic_segments(pixels: torch.Tensor, n_segments: int) -> torch.Tensor:
    """SLIC superpixels of one image ``pixels`` ``[3, H, W]`` in [0, 1] with compactness 10000 (MDA's setting),
    relabelled ``0 .. n-1``; ``[H, W]`` int64."""
    try:
        from skimage.segmentation import slic
    except ImportError as err:  # pragma: no cover - scikit-image is a dependency
        raise CaapError("mda with segments='slic' needs scikit-image; install it or use segments='grid'") from err
    image = pixels.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    labels = slic(image, n_segments=n_segments, compactness=10000, start_label=0)
    _, dense = np.unique(labels, return_inverse=True)
    return torch.from_numpy(dense.reshape(labels.shape).astype(np.int64))


def grid_segments(size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """The patch grid as segments, ``[H, W]`` int64 (row-major patch index)."""
    rows = torch.arange(size[0]) * grid[0] // size[0]
    cols = torch.arange(size[1]) * grid[1] // size[1]
    return rows[:, None] * grid[1] + cols[None, :]


def segment_ranking(order_map: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Segments ``0 .. n-1`` from the lowest to the highest mean of ``|order_map|`` after the authors'
    resampling: ``order_map`` ``[h, w]`` (patch or pixel) bilinear to the input size, bilinear with antialias
    to ``grid``, nearest-exact back up; ``[n]`` int64 (stable on ties)."""
    size = tuple(labels.shape)
    m = order_map.float()[None, None]
    if tuple(m.shape[-2:]) != size:
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    m = F.interpolate(m, size=grid, mode="bilinear", align_corners=False, antialias=True)
    m = F.interpolate(m, size=size, mode="nearest-exact")[0, 0].abs().flatten()
    flat = labels.flatten()
    n = int(flat.max()) + 1
    means = torch.zeros(n).index_add_(0, flat, m) / torch.bincount(flat, minlength=n).float()
    return torch.argsort(means, stable=True)


def segment_values(curve: np.ndarray, order: list[int], sizes: torch.Tensor) -> torch.Tensor:
    """``a_i = d_i / |seg_i| + d_i (n - i) / n`` for the ``i``-th segment of ``order`` (``d_i = curve[i-1] -
    curve[i]``, ``i = 1..n``); ``[n]`` float64 indexed by segment."""
    n = len(order)
    drop = torch.from_numpy(curve[:-1] - curve[1:])  # [n]
    rest = (n - torch.arange(1, n + 1, dtype=torch.float64)) / n
    values = torch.zeros(n, dtype=torch.float64)
    index = torch.tensor(order)
    values[index] = drop / sizes[index].double() + drop * rest
    return values


def smooth_map(segment_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The map MDA returns: ``segment_map`` ``[H, W]`` resized to ``grid`` (bilinear, antialias) and back
    (bilinear), as torchvision's ``Resize`` does in the authors' code."""
    out = F.interpolate(segment_map[None, None], size=grid, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(out, size=tuple(segment_map.shape), mode="bilinear", align_corners=False)[0, 0]


@register
class MDA(Explainer):
    """Metric-Driven Attributions (see the module docstring).

    Args:
        order: the registered method whose map orders the candidates (the authors' ``"bidirectional"``) or an
            :class:`Explainer` built on the same model.
        segments: ``"slic"`` (the authors') or ``"grid"`` (the patch grid).
        candidates: segments tried per greedy step (the authors' ``min(2 floor(sqrt(n)), 28)`` = 28 at 14×14).
        cutoff: where the insertion search stops (share of the way from blur to the original probability).
        kappa: threshold of the dense map. gamma: dense share of the output, in [0, 1] (0: sparse).
        smooth: the authors' returned map (resized to the patch grid and back); False: constant per segment.
        blur_start, blur_step, blur_prob: blur kernel sizes tried (31, 35, …, at most the image side) until the
            target's probability on the blurred image is at most ``blur_prob``.
        batch_size: composites per forward (default: about 2k tokens on the CPU, 256 on CUDA).
    """

    model_agnostic = True
    name = "mda"
    resolution = "pixel"
    signed = False

    def __init__(self, model, order: str | Explainer = "bidirectional", segments: str = "slic",
                 candidates: int = 28, cutoff: float = 0.9, kappa: float = 0.005, gamma: float = 0.0,
                 smooth: bool = True, blur_start: int = 31, blur_step: int = 4, blur_prob: float = 0.01,
                 batch_size: int | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if isinstance(order, Explainer):
            if order.model is not self.model:
                raise CaapError("mda: the order explainer must be built on the same model")
            self.order = order
        elif isinstance(order, str) and order in METHODS and order != self.name:
            self.order = METHODS.get(order)(self.adapter, dtype=self.dtype)
        else:
            raise CaapError(f"mda: order must be a registered method other than 'mda' or an Explainer, got {order!r}")
        if segments not in ("slic", "grid"):
            raise CaapError(f"mda: segments must be 'slic' or 'grid', got {segments!r}")
        if not isinstance(smooth, bool):
            raise CaapError(f"mda: smooth must be true or false, got {smooth!r}")
        self.segments, self.smooth = segments, smooth
        self.candidates = _count(candidates, "candidates")
        self.cutoff = _number(cutoff, "cutoff", 0.0, 1.0)
        self.kappa = _number(kappa, "kappa", 0.0, float("inf"))
        self.gamma = _number(gamma, "gamma", 0.0, 1.0)
        self.blur_start, self.blur_step = _count(blur_start, "blur_start"), _count(blur_step, "blur_step")
        self.blur_prob = _number(blur_prob, "blur_prob", 0.0, 1.0)
        self.batch_size = check_batch_size(batch_size)

    def settings(self) -> dict:
        return {**super().settings(), "order": self.order.name, "segments": self.segments,
                "candidates": self.candidates, "cutoff": self.cutoff, "kappa": self.kappa, "gamma": self.gamma,
                "smooth": self.smooth, "blur_start": self.blur_start, "blur_step": self.blur_step,
                "blur_prob": self.blur_prob, "batch_size": self.batch_size}

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        order_maps = self.order.explain(images, target, progress=False).scores  # [B, h, w]
        pixels = self.adapter.normalization.denormalize(images)
        searches = [self._search(images[i], pixels[i], order_maps[i], grid) for i in range(images.shape[0])]
        chunk = self.batch_size or module_batch_size(self.adapter.num_prefix + grid[0] * grid[1], images.device)
        results = self._drive(searches, target, chunk)
        maps = torch.stack([r["map"] for r in results]).float()
        meta = {key: torch.tensor([r[key] for r in results]) for key in
                ("forward_passes", "blur_size", "p_blur", "segments_found", "insertion_prefix")}
        return Maps(maps, meta=meta)

    # --- the batch stream -------------------------------------------------------------------------------
    @torch.inference_mode()
    def _probs(self, composites: torch.Tensor, target: torch.Tensor, chunk: int) -> torch.Tensor:
        """Target probabilities ``[R]`` of composites ``[R, 3, H, W]`` with targets ``[R]``, ``chunk`` per forward."""
        out = []
        for start in range(0, composites.shape[0], chunk):
            with autocast(self.device, self.dtype):
                logits = self.adapter.forward(composites[start:start + chunk])
            out.append(logits.float().softmax(-1).gather(1, target[start:start + chunk, None]).squeeze(1))
        return torch.cat(out).cpu().double()

    def _drive(self, searches: list[Search], target: torch.Tensor, chunk: int) -> list[dict]:
        """Run every image's search, each step's composites of all images in one stream of forwards."""
        results: list = [None] * len(searches)
        pending = {i: next(s) for i, s in enumerate(searches)}
        bar = self.progress_bar(None)
        while pending:
            owners = list(pending)
            sizes = [pending[i].shape[0] for i in owners]
            composites = torch.cat([pending[i] for i in owners])
            tgt = torch.cat([target[i].expand(k) for i, k in zip(owners, sizes, strict=True)]).to(self.device)
            probs = self._probs(composites, tgt, chunk).split(sizes)
            bar.update(composites.shape[0])
            for i, p in zip(owners, probs, strict=True):
                try:
                    pending[i] = searches[i].send(p)
                except StopIteration as stop:
                    results[i] = stop.value
                    del pending[i]
        bar.close()
        return results

    # --- one image's search -----------------------------------------------------------------------------
    def _search(self, x: torch.Tensor, pixels: torch.Tensor, order_map: torch.Tensor, grid) -> Search:
        size = tuple(x.shape[-2:])
        passes = 0

        def ask(composites: torch.Tensor):
            nonlocal passes
            passes += composites.shape[0]
            return (yield composites)

        p_x = float((yield from ask(x[None]))[0])
        blur_size = self.blur_start
        while True:
            blurred = kernel_blur(x[None], blur_size)[0]
            p_blur = float((yield from ask(blurred[None]))[0])
            if p_blur <= self.blur_prob or blur_size + self.blur_step > min(size):
                break
            blur_size += self.blur_step
        zero = torch.zeros_like(x)
        p_zero = float((yield from ask(zero[None]))[0])

        n_patch = grid[0] * grid[1]
        labels = slic_segments(pixels, n_patch) if self.segments == "slic" else grid_segments(size, grid)
        labels = labels.to(x.device)
        n = int(labels.max()) + 1
        masks = labels.flatten()[None, :] == torch.arange(n, device=x.device)[:, None]  # [n, H*W]
        ranking = segment_ranking(order_map.cpu(), labels.cpu(), grid).tolist()  # low -> high

        prefix = yield from self._greedy(x, blurred, masks, ranking[::-1], set(), best=True, ask=ask,
                                         stop=lambda p: p >= self.cutoff or (
                                             running_normalised([p], p_blur, p_x, increasing=True)[0] >= self.cutoff))
        worst = yield from self._greedy(x, zero, masks, ranking, set(prefix), best=False, ask=ask, stop=None)
        current = zero.flatten(1).clone()
        forced = []
        for seg in reversed(prefix):  # the insertion prefix, inserted last
            current = torch.where(masks[seg], x.flatten(1), current)
            forced.append(current.view_as(x))
        responses = [p for _, p in worst] + (yield from ask(torch.stack(forced))).tolist()
        best = [s for s, _ in worst] + list(reversed(prefix))
        best.reverse()  # the best deletion order
        curve = running_normalised([p_x, *responses[::-1]], p_zero, p_x, increasing=False)
        sizes = torch.bincount(labels.flatten().cpu(), minlength=n)
        first = segment_values(convex_fit(curve, convex=True), best, sizes)

        mas = yield from self._mas_curves(x, blurred, zero, first[labels.cpu()].abs(), (p_blur, p_x), ask)
        insertion = running_normalised(mas[0], p_blur, p_x, increasing=True)
        deletion = running_normalised(mas[1], p_zero, p_x, increasing=False)
        points = np.linspace(0, 100, n + 1)
        steps = np.linspace(0, 100, len(insertion))
        mean = 1 - (np.interp(points, steps, insertion) + 1 - np.interp(points, steps, deletion)) / 2
        sparse = segment_values(convex_fit(mean, convex=True), best, sizes)
        rest = torch.zeros(n, dtype=torch.float64)
        rest[torch.tensor(best)] = (n - torch.arange(1, n + 1, dtype=torch.float64)) / n
        dense = torch.where(sparse >= self.kappa, rest, sparse)
        if dense.max() != 0:
            dense = dense / dense.max() * sparse.max()
        values = (1 - self.gamma) * sparse + self.gamma * dense
        out = values[labels.cpu()].float()  # [H, W]
        if self.smooth:
            out = smooth_map(out, grid)
        return {"map": out, "forward_passes": passes, "blur_size": blur_size, "p_blur": p_blur,
                "segments_found": n, "insertion_prefix": len(prefix)}

    def _greedy(self, x, start, masks, ranking, excluded, *, best: bool, ask, stop):
        """Greedy insertion from ``start``: each step tries the first ``candidates`` unused segments of
        ``ranking`` and keeps the best (``best``) or worst; returns ``[(segment, p)]`` (``best``: just the
        segments, up to the first step where ``stop(p)``)."""
        current = start.flatten(1).clone()  # [3, H*W]
        source = x.flatten(1)
        remaining = [s for s in ranking if s not in excluded]
        chosen: list[tuple[int, float]] = []
        while remaining:
            tried = remaining[: self.candidates]
            composites = torch.where(masks[tried][:, None, :], source[None], current[None])  # [k, 3, H*W]
            probs = yield from ask(composites.view(len(tried), *x.shape))
            pick = int(torch.argmax(probs) if best else torch.argmin(probs))
            seg, p = tried[pick], float(probs[pick])
            current = torch.where(masks[seg], source, current)
            remaining.remove(seg)
            chosen.append((seg, p))
            if stop is not None and stop(p):
                break
        return [s for s, _ in chosen] if best else chosen

    def _mas_curves(self, x, blurred, zero, saliency: torch.Tensor, starts: tuple[float, float], ask,
                    chunk: int = 32):
        """Raw probability curves ``[T + 1]`` of MAS insertion (blur -> x) and deletion (x -> zero) by
        ``saliency`` ``[H, W]`` (descending, ``W`` pixels per step); ``starts``: ``(p_blur, p_x)``, their first
        points."""
        flat = saliency.flatten()
        step = saliency.shape[1]
        order = torch.argsort(flat, stable=True).flip(0)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        rank = rank.to(x.device)
        n_steps = -(-flat.numel() // step)
        curves = []
        for start, finish in ((blurred, x), (x, zero)):
            probs = []
            for lo in range(1, n_steps + 1, chunk):
                counts = torch.arange(lo, min(lo + chunk, n_steps + 1), device=x.device) * step
                swap = (rank[None, :] < counts[:, None])[:, None, :]  # [k, 1, H*W]
                composites = torch.where(swap, finish.flatten(1)[None], start.flatten(1)[None])
                probs.append((yield from ask(composites.view(-1, *x.shape))))
            curves.append(torch.cat(probs).numpy())
        return [np.concatenate([[first], c]) for first, c in zip(starts, curves, strict=True)]
