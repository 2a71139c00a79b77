"""Which blocks CAAP patches: validation of a layer set against a model's depth."""

from __future__ import annotations

from collections.abc import Iterable

from caap.errors import CaapError
from caap.specs import parse_layers


def default_layers(num_blocks: int) -> list[int]:
    """The middle band ``range(L//3, 2L//3)`` (never empty)."""
    band = list(range(num_blocks // 3, 2 * num_blocks // 3))
    return band or [num_blocks // 2]


def check_layers(layers: str | int | Iterable[int] | None, num_blocks: int) -> list[int]:
    """Sorted unique 0-based block indices, validated against ``num_blocks`` (``None``: the middle band).

    Accepts the spec forms of :func:`caap.specs.parse_layers` (``"4:8"``, ``"4,5,7"``, ``6``)."""
    if layers is None:
        return default_layers(num_blocks)
    try:
        values = parse_layers(layers)
    except TypeError:
        raise CaapError(f"layers must be block indices (e.g. range(4, 8)), got {layers!r}") from None
    if not values:
        raise CaapError("layers must name at least one block, got an empty set")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise CaapError(f"layers must be integer block indices, got {v!r}")
        if not 0 <= v < num_blocks:
            raise CaapError(
                f"layer {v} is out of range for a model with {num_blocks} blocks (expected 0..{num_blocks - 1})"
            )
    return sorted(set(values))
