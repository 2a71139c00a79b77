"""ROAD — RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022): pixels are removed by
*noisy linear imputation* instead of a fixed canvas, so the removal itself leaks no class information and the
images stay close to the data (the answer to the out-of-distribution objection to deletion).

For each share ``p`` in ``percentiles`` the ``p`` % most relevant pixels (``road_morf``) or least relevant pixels
(``road_lerf``) of the map are removed: each removed pixel becomes the weighted mean of its 8 neighbours (1/6 for
the 4 edge neighbours, 1/12 for the diagonal ones; neighbours outside the image drop out), all removed pixels
solved together as one sparse linear system, plus Gaussian noise of std ``noise`` (seeded). The metric is the
mean target score over the shares; ``road`` is ``(lerf - morf) / 2``, as pytorch-grad-cam's ``ROADCombined``.

Which pixels go: exactly ``round(p · H · W / 100)`` of them, the most (least) relevant first, ties taken in a
seeded random order of the model's patches and then of the pixels inside a patch (:func:`removal_order`), the
same for every method. grad-cam's rule (remove every pixel at or above the ``100 - p`` percentile) removes whole
tied plateaus instead: on a Grad-CAM map of DeiT-Tiny, ~80 % zeros, its "30 %" removes 86 % of the pixels. That
rule stays available as ``ties="percentile"`` (it is how the scores are checked against grad-cam's).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from caap.adapters import adapt
from caap.core.scores import apply_score, make_score
from caap.core.state import eval_mode, model_device
from caap.errors import CaapError
from caap.metrics.base import Metric, register, to_pixels

NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def imputation_system(keep: np.ndarray, values: np.ndarray) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """The imputation of the pixels where ``keep`` ``[H, W]`` is False as the symmetric positive definite system
    ``(D − W_uu) x = W_uk v`` (``values`` ``[C, H * W]``, the kept pixels' values as constants): ``(pairs, diagonal,
    rhs, missing)`` — ``pairs`` the off-diagonal couplings ``(rows, cols, weight)`` between missing pixels, ``diagonal``
    ``[n]`` each missing pixel's total neighbour weight, ``rhs`` ``[n, C]`` and ``missing`` ``[n]`` their flat indices.
    :func:`imputation_matrix` assembles the matrix; benchmarks/road_solvers.py hands it to other solvers."""
    h, w = keep.shape
    flat_keep = keep.ravel()
    missing = np.flatnonzero(~flat_keep)
    index = np.full(h * w, -1)
    index[missing] = np.arange(missing.size)
    rows, cols = np.divmod(missing, w)
    diagonal, rhs, pairs = np.zeros(missing.size), np.zeros((missing.size, values.shape[0])), []
    for (dy, dx), weight in NEIGHBOURS:
        ny, nx = rows + dy, cols + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        neighbour = ny[inside] * w + nx[inside]
        diagonal[inside] += weight
        known = flat_keep[neighbour]
        eq = np.flatnonzero(inside)
        rhs[eq[known]] += weight * values[:, neighbour[known]].T
        pairs.append((eq[~known], index[neighbour[~known]], weight))
    return pairs, diagonal, rhs, missing


def imputation_matrix(pairs: list, diagonal: np.ndarray, dtype=np.float64):
    """The CSC matrix ``D − W_uu`` of :func:`imputation_system`."""
    n = diagonal.size
    rows = np.concatenate([p[0] for p in pairs] + [np.arange(n)])
    cols = np.concatenate([p[1] for p in pairs] + [np.arange(n)])
    vals = np.concatenate([np.full(p[0].size, -p[2]) for p in pairs] + [diagonal])
    return coo_matrix((vals.astype(dtype), (rows, cols)), shape=(n, n)).tocsc()


def linear_impute(image: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
    """``image`` ``[C, H, W]`` with every pixel where ``keep`` ``[H, W]`` is False replaced by the solution of
    ``x_i = Σ_j w_ij x_j`` over its neighbours (kept neighbours as constants): one sparse solve, no noise."""
    if keep.all():
        return image.clone()
    values = image.detach().cpu().double().reshape(image.shape[0], -1).numpy()  # [C, H*W]
    pairs, diagonal, rhs, missing = imputation_system(keep, values)
    solution = spsolve(imputation_matrix(pairs, diagonal), rhs).reshape(missing.size, -1)  # [n, C]
    out = image.detach().cpu().float().reshape(image.shape[0], -1).clone()
    out[:, missing] = torch.from_numpy(solution.T).float()
    return out.reshape(image.shape)


def removal_keep(saliency: np.ndarray, share: float, most_relevant_first: bool) -> np.ndarray:
    """bool ``[H, W]``: the pixels kept when ``share`` % are removed by grad-cam's rule (kept where the value, or
    ``1 - value`` for least-relevant-first, is below its ``100 - share`` percentile; ties all go together)."""
    ranked = saliency if most_relevant_first else 1 - saliency
    return ranked < np.percentile(ranked, 100 - share)


def tie_keys(size: tuple[int, int], grid: tuple[int, int], seed: int) -> np.ndarray:
    """int64 ``[H * W]``: each pixel's place among tied pixels — a seeded random order of the ``grid``'s patches,
    then a seeded random order of the pixels (so tied patches go whole, one after the other)."""
    h, w = size
    gh, gw = grid
    gen = torch.Generator().manual_seed(seed)
    patch_rank = torch.randperm(gh * gw, generator=gen).numpy()
    pixel_rank = torch.randperm(h * w, generator=gen).numpy()
    rows, cols = np.divmod(np.arange(h * w), w)
    patch = (rows * gh // h) * gw + cols * gw // w
    return patch_rank[patch].astype(np.int64) * (h * w) + pixel_rank


def removal_order(saliency: np.ndarray, keys: np.ndarray, most_relevant_first: bool) -> np.ndarray:
    """``[H * W]`` pixel indices, first removed first: by value (highest first for most-relevant-first), ties
    by ``keys`` (:func:`tie_keys`)."""
    values = saliency.ravel().astype(np.float64)
    return np.lexsort((keys, -values if most_relevant_first else values))


def exact_keep(order: np.ndarray, size: tuple[int, int], share: float) -> np.ndarray:
    """bool ``[H, W]``: the pixels kept when the first ``round(share · H · W / 100)`` of ``order`` are removed."""
    keep = np.ones(size[0] * size[1], dtype=bool)
    keep[order[: round(share * keep.size / 100)]] = False
    return keep.reshape(size)


class _ROAD(Metric):
    """Base: the mean target score after removing each share of pixels (see the module docstring).

    Args:
        percentiles: shares of pixels removed, in percent (default 10, 20, …, 90).
        noise: std of the Gaussian noise added to the imputed pixels, in normalised input units (grad-cam: 0.01).
        seed: the noise's seed (one noise field per share, the same for every image, so that results do not depend
            on the batch) and the order of tied pixels.
        score: ``"prob"`` (default), ``"logit"``, ``"logprob"`` or a callable.
        ties: ``"random"`` (default: exactly the share, ties in a seeded random order of patches, then pixels) or
            ``"percentile"`` (grad-cam's rule: tied plateaus removed whole).
    """

    needs_model = True
    orders: tuple[bool, ...] = (True,)

    def __init__(self, percentiles: Sequence[float] | str = PERCENTILES, noise: float = 0.01, seed: int = 0,
                 score="prob", ties: str = "random") -> None:
        if isinstance(percentiles, str):
            percentiles = [float(p) for p in percentiles.split(",") if p.strip()]
        elif isinstance(percentiles, (int, float)):
            percentiles = [float(percentiles)]
        shares = [float(p) for p in percentiles]
        if not shares or any(not 0 < p < 100 for p in shares):
            raise CaapError(f"percentiles must be shares in (0, 100) of the pixels, got {percentiles!r}")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
            raise CaapError(f"noise must be a non-negative number, got {noise!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CaapError(f"seed must be an int, got {seed!r}")
        if ties not in ("random", "percentile"):
            raise CaapError(f"ties must be 'random' or 'percentile', got {ties!r}")
        self.percentiles, self.noise, self.seed, self.ties = shares, float(noise), seed, ties
        self.score_name, self.score_fn = make_score(score)
        self.solves = Solves()  # its own; share_solves() gives metrics of the same settings one

    @property
    def settings(self) -> tuple:
        """What the scores depend on besides the batch: metrics with equal settings may share their solves."""
        return (tuple(self.percentiles), self.noise, self.seed, self.score_name, self.score_fn, self.ties)

    def imputed(self, image: torch.Tensor, saliency: np.ndarray, most_relevant_first: bool,
                grid: tuple[int, int] | None = None):
        """``[len(percentiles), C, H, W]``: ``image`` after each removal, noise drawn from (seed, share) — the
        same for every image and batch position, so that a score never depends on the batch it is scored in;
        ``grid``: the model's patch grid, whose patches order tied pixels (default: one pixel per patch)."""
        size = tuple(saliency.shape)
        order = None
        if self.ties == "random":
            order = removal_order(saliency, tie_keys(size, grid or size, self.seed), most_relevant_first)
        out = []
        for k, share in enumerate(self.percentiles):
            if order is None:
                keep = removal_keep(saliency, share, most_relevant_first)
            else:
                keep = exact_keep(order, size, share)
            filled = linear_impute(image, keep)
            if self.noise > 0:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
                noise = torch.randn(filled.shape, generator=gen) * self.noise
                filled = torch.where(torch.from_numpy(keep)[None], filled, filled + noise)
            out.append(filled)
        return torch.stack(out)

    def means(self, model, images, targets, maps) -> dict[bool, torch.Tensor]:
        """Mean target score over the shares ``[B]``, for each removal order (True: most relevant first), from
        this metric's :class:`Solves` (shared with the other ROAD metrics of a run by :func:`share_solves`)."""
        return self.solves.means(self, model, images, targets, maps)

    @torch.inference_mode()
    def _score(self, model, images, targets, maps, orders) -> dict[bool, torch.Tensor]:
        adapter = adapt(model)
        device = model_device(adapter.model)
        pixels = to_pixels(maps, tuple(images.shape[-2:])).numpy()
        grid = adapter.grid(tuple(images.shape[-2:]))
        result = {}
        with eval_mode(adapter.model):
            for morf in orders:
                scores = []
                for b in range(images.shape[0]):
                    batch = self.imputed(images[b].cpu(), pixels[b], morf, grid).to(device, images.dtype)
                    s = apply_score(self.score_fn, adapter.forward(batch))[:, int(targets[b])]
                    scores.append(s.float().mean().cpu())
                result[morf] = torch.stack(scores)
        return result


class Solves:
    """The ROAD scores of the last batch scored through this object, per removal order: ``road``, ``road_morf``
    and ``road_lerf`` with the same settings, given one object by :func:`share_solves` and scored one after the
    other on the same batch (as the benchmark runner does), impute each removal once. A batch is the same when it
    is the same model and images objects (weakly referenced; the images unchanged since), with equal targets and
    maps and metric settings; anything else is solved afresh. One object per run (the runner's), not per thread:
    a metric never sees another run's scores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: dict | None = None

    def means(self, metric: _ROAD, model, images, targets, maps) -> dict[bool, torch.Tensor]:
        with self._lock:
            entry = self._entry
            same = (entry is not None and entry["settings"] == metric.settings and entry["model"]() is model
                    and entry["images"]() is images and entry["version"] == images._version
                    and torch.equal(entry["targets"], targets) and torch.equal(entry["maps"], maps))
            if not same:
                entry = {"settings": metric.settings, "model": weakref.ref(model), "images": weakref.ref(images),
                         "version": images._version, "targets": targets.clone(), "maps": maps.clone(), "done": {}}
                self._entry = entry
            done = entry["done"]
            missing = tuple(order for order in metric.orders if order not in done)
            if missing:
                done.update(metric._score(model, images, targets, maps, missing))
            return {order: done[order] for order in metric.orders}


def share_solves(metrics) -> None:
    """Give the ROAD metrics among ``metrics`` that have equal settings one :class:`Solves`, so that scoring them on
    the same batch imputes each removal once (the benchmark runner calls it on a run's metrics)."""
    shared: dict[tuple, Solves] = {}
    for metric in metrics:
        if isinstance(metric, _ROAD):
            metric.solves = shared.setdefault(metric.settings, Solves())


@register
class ROADMostRelevantFirst(_ROAD):
    """ROAD, most relevant pixels removed first: the mean target score (lower is better)."""

    name = "road_morf"
    higher_is_better = False

    def evaluate(self, model, images, targets, maps, masks):
        return self.means(model, images, targets, maps)[True]


@register
class ROADLeastRelevantFirst(_ROAD):
    """ROAD, least relevant pixels removed first: the mean target score (higher is better)."""

    name = "road_lerf"
    orders = (False,)

    def evaluate(self, model, images, targets, maps, masks):
        return self.means(model, images, targets, maps)[False]


@register
class ROAD(_ROAD):
    """ROAD combined: ``(lerf - morf) / 2`` (higher is better), as grad-cam's ``ROADCombined``."""

    name = "road"
    orders = (True, False)

    def evaluate(self, model, images, targets, maps, masks):
        means = self.means(model, images, targets, maps)
        return (means[False] - means[True]) / 2
