"""Response curves for metric-driven attributions: normalisation, convex projection, kernels.

Pure functions on numpy / torch arrays, shared by :mod:`caap.methods.mda`; no model here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from scipy.optimize import nnls

from caap.errors import CaapError


def running_normalised(curve: np.ndarray, low: float, high: float, *, increasing: bool) -> np.ndarray:
    """``clip((curve - low) / |high - low|, 0, 1)`` made monotone by a running max (``increasing``) or min.

    ``curve`` ``[T]`` (target probabilities); ``low`` the substrate's, ``high`` the original image's
    probability. A curve whose ends are equal normalises to all ones."""
    span = abs(high - low)
    values = np.ones(len(curve)) if span == 0 else np.clip((np.asarray(curve, np.float64) - low) / span, 0.0, 1.0)
    return np.maximum.accumulate(values) if increasing else np.minimum.accumulate(values)


def convex_fit(curve: np.ndarray, *, convex: bool = True) -> np.ndarray:
    """The closest curve (least squares) to ``curve`` ``[T]`` that is convex (``convex``) or concave, lies in
    [0, 1] and keeps both end points: the quadratic programme MDA solves with cvxopt.

    Solved exactly as a least-distance programme through non-negative least squares (Lawson & Hanson 1974,
    ch. 23): with ``u = x - y`` on the free points and constraints ``E u >= f``, ``min ||u||`` is read off the
    residual of ``NNLS([Eᵀ; fᵀ], e_last)``."""
    y = np.asarray(curve, dtype=np.float64)
    t = len(y)
    if t < 3:
        return y.copy()
    m = t - 2  # free points x_1 .. x_{T-2}; x_0 and x_{T-1} are fixed to y's
    sign = 1.0 if convex else -1.0
    # second differences x_i - 2 x_{i+1} + x_{i+2}, times sign, must be >= 0
    second = np.zeros((m, t))
    rows = np.arange(m)
    second[rows, rows], second[rows, rows + 1], second[rows, rows + 2] = sign, -2 * sign, sign
    e = np.vstack([second[:, 1:-1], np.eye(m), -np.eye(m)])  # E x_free >= f
    fixed = second[:, 0] * y[0] + second[:, -1] * y[-1]
    f = np.concatenate([-fixed, np.zeros(m), -np.ones(m)])
    free = y[1:-1]
    f = f - e @ free  # constraints on u = x_free - y_free
    if np.all(f <= 0):
        return y.copy()  # y is feasible: its own projection
    lhs = np.vstack([e.T, f[None, :]])  # [m + 1, constraints]
    rhs = np.zeros(m + 1)
    rhs[-1] = 1.0
    weights, _ = nnls(lhs, rhs, maxiter=50 * lhs.shape[1])
    residual = lhs @ weights - rhs
    if abs(residual[-1]) < 1e-12:
        raise CaapError("convex_fit: the constraints are infeasible (end points outside [0, 1]?)")
    u = -residual[:-1] / residual[-1]
    return np.concatenate([[y[0]], np.clip(free + u, 0.0, 1.0), [y[-1]]])


def delta_kernel(size: int) -> torch.Tensor:
    """MDA's blur kernel ``[size, size]``: a centred delta smoothed by scipy's ``gaussian_filter`` with sigma =
    ``size`` (reflecting edges, so the mass stays in the window and the kernel sums to 1)."""
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    return torch.from_numpy(gaussian_filter(delta, size).astype(np.float32))


def kernel_blur(images: torch.Tensor, size: int) -> torch.Tensor:
    """Blur ``images`` ``[B, C, H, W]`` channel by channel with :func:`delta_kernel`, zero padding ``size // 2``
    (in normalised space zero is the mean colour, so the borders fade to it)."""
    c = images.shape[1]
    kernel = delta_kernel(size).to(images.device, images.dtype)
    return F.conv2d(images, kernel.expand(c, 1, size, size), padding=size // 2, groups=c)
