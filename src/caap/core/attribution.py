"""The result type shared by CAAP and every baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from caap.errors import CaapError

_UPSAMPLE_MODES = ("bilinear", "bicubic", "nearest", "area")


@dataclass
class Attribution:
    """Attribution maps for a batch of images.

    Attributes:
        scores: float32 ``[B, h, w]`` on the CPU. For patch-level methods ``(h, w)`` is the patch grid
            ``(gh, gw)``; for pixel-level methods it is the input size ``(H, W)``. For CAAP,
            ``scores[b, i, j] = s(patched run)[c] - s(context run)[c]`` in the score's units (logits by
            default); positive means the patch's internal representation carries evidence for ``c``.
        target: int64 ``[B]``, the explained class of each image.
        input_size: ``(H, W)`` of the images that were explained, in pixels.
        method: registry name of the method that produced the maps.
        class_scores: optional float32 ``[B, C, h, w]`` with the map of every class (CAAP ``all_classes``).
        meta: settings and per-image extras (e.g. ``context_score``, ``source_score``: float32 ``[B]``).
    """

    scores: torch.Tensor
    target: torch.Tensor
    input_size: tuple[int, int]
    method: str = "caap"
    class_scores: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scores.dim() != 3:
            raise CaapError(f"Attribution.scores must be [B, h, w], got shape {tuple(self.scores.shape)}")
        if self.target.shape != (self.scores.shape[0],):
            raise CaapError(
                f"Attribution.target must be [B]={self.scores.shape[0]}, got shape {tuple(self.target.shape)}"
            )

    def __len__(self) -> int:
        return self.scores.shape[0]

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the native map."""
        return (self.scores.shape[1], self.scores.shape[2])

    def upsample(self, size: tuple[int, int] | int | None = None, mode: str = "bilinear") -> torch.Tensor:
        """Maps resized to ``size`` (default: the input size), float32 ``[B, H, W]``.

        ``mode`` is a ``torch.nn.functional.interpolate`` mode; ``"nearest"`` keeps patch blocks exact.
        """
        if mode not in _UPSAMPLE_MODES:
            raise CaapError(f"upsample mode {mode!r} is not one of {_UPSAMPLE_MODES}")
        if size is None:
            size = self.input_size
        elif isinstance(size, int):
            size = (size, size)
        maps = self.scores[:, None].float()  # [B, 1, h, w]
        if tuple(size) == self.grid:
            return maps[:, 0].clone()
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        return F.interpolate(maps, size=tuple(size), mode=mode, **kwargs)[:, 0]

    def to_pixels(self, mode: str = "bilinear") -> torch.Tensor:
        """Maps at input resolution as ``[B, 1, H, W]`` (the Captum / Quantus layout)."""
        return self.upsample(None, mode=mode)[:, None]
