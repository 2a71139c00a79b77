"""Lloyd's k-means as Transformer Input Sampling's authors run it (``fast-pytorch-kmeans`` 0.1.6, the version
their requirements pin): full batch, Euclidean, ``k`` distinct data points as the initial centroids, an
empty cluster's centroid set to 0, stop when the squared change of the centroids is at most ``tol`` or after
``max_iter`` rounds. Written out so that caap does not depend on that package at run time; the tests compare
it with the package (a test dependency) on the same seed.

``init=KMEANS_022`` starts as the package's later release 0.2.2 does by default (``init_method="random"``):
``k`` indices drawn **with replacement** by ``torch.randint`` — so with TIS's 1,024 clusters over 2,304 channels
about 190 initial centroids are repeats, whose clusters stay empty after the first round (centroid 0). The
iterations are the same in both releases (full batch, same update, same stopping rule).
"""

from __future__ import annotations

import numpy as np
import torch

from caap.errors import CaapError


def initial_points(n: int, k: int, seed: int) -> np.ndarray:
    """The ``k`` distinct point indices the initial centroids are taken from: what ``np.random.choice(n, k,
    replace=False)`` draws after ``np.random.seed(seed)`` (the authors' k-means uses numpy's global generator),
    drawn here from a private ``RandomState(seed)``, so no global state is read or changed."""
    if not 0 < k <= n:
        raise CaapError(f"k-means needs 1 <= clusters <= points, got {k} clusters for {n} points")
    return np.random.RandomState(seed).permutation(n)[:k]


KMEANS_016, KMEANS_022 = "0.1.6", "0.2.2"
INITS = (KMEANS_016, KMEANS_022)


def initial_points_022(n: int, k: int, seed: int) -> torch.Tensor:
    """The ``k`` point indices (repeats allowed) fast-pytorch-kmeans 0.2.2 starts from: ``torch.randint(0, n,
    [k])`` after ``torch.manual_seed(seed)``, drawn here from a private CPU generator seeded alike."""
    if not 0 < k <= n:
        raise CaapError(f"k-means needs 1 <= clusters <= points, got {k} clusters for {n} points")
    return torch.randint(0, n, (k,), generator=torch.Generator().manual_seed(seed))


def kmeans(points: torch.Tensor, k: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-4,
           init: str = KMEANS_016) -> torch.Tensor:
    """Centroids ``[k, d]`` of ``points`` ``[n, d]`` (float32; see the module docstring). ``init``: whose
    initialisation, ``"0.1.6"`` (the authors' pin, distinct points) or ``"0.2.2"`` (repeats allowed)."""
    if points.dim() != 2:
        raise CaapError(f"k-means takes points [n, d], got {tuple(points.shape)}")
    if init not in INITS:
        raise CaapError(f"the k-means initialisation must be one of {', '.join(INITS)}, got {init!r}")
    n = points.shape[0]
    start = (torch.from_numpy(initial_points(n, k, seed)) if init == KMEANS_016 else initial_points_022(n, k, seed))
    centroids = points[start.to(points.device)]  # [k, d]
    clusters = torch.arange(k, device=points.device)[:, None]  # [k, 1]
    squared = (points**2).sum(1)[:, None]  # [n, 1]
    for _ in range(max_iter):
        similarity = 2 * points @ centroids.T - squared - (centroids**2).sum(1)[None, :]  # [n, k]: -distance²
        closest = similarity.max(dim=-1).indices  # [n]
        member = (closest[None].expand(k, -1) == clusters).to(points.dtype)  # [k, n]
        update = member @ points / member.sum(-1)[:, None]  # [k, d]; 0/0 for an empty cluster
        update = torch.nan_to_num(update, nan=0.0, posinf=0.0, neginf=0.0)
        change = (update - centroids).pow(2).sum()
        centroids = update
        if change <= tol:
            break
    return centroids
