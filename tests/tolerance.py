"""How far float rounding may move a map when the same images are computed in another batch (issue 28).

Batch composition decides which kernel sums a matrix product's terms and in which order (oneDNN / MKL pick
blocking by shape, AMX and AVX-512 machines differently), so a map computed alone and the same map inside a
batch agree to float rounding, not bit for bit. The bound scales with the map's own magnitude and the dtype:
``ULPS`` units in the last place of each map's largest value (fast CAAP on a 2-core AMD EPYC: 12 ULPs, the
largest seen; the tests of all other methods stay below 4). A wrong image, target or class in a batch moves a
map by O(1) of its scale, far beyond this bound.
"""

from __future__ import annotations

import torch

ULPS = 64


def assert_rounding_close(actual: torch.Tensor, expected: torch.Tensor, dims: int = 2, ulps: int = ULPS) -> None:
    """``actual`` equals ``expected`` (maps ``[..., h, w]`` with ``dims`` map dimensions) to ``ulps`` units in the
    last place of each map's largest magnitude, in ``expected``'s dtype."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    eps = torch.finfo(expected.dtype).eps
    scale = expected.abs().amax(dim=tuple(range(-dims, 0)), keepdim=True)
    bound = ulps * eps * scale + torch.finfo(expected.dtype).tiny
    worst = ((actual - expected).abs() / bound).max()
    assert worst <= 1, f"maps differ by {float(worst):.2f}x the rounding bound ({ulps} ULPs of each map's maximum)"
