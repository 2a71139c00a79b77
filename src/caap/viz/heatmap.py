"""Heatmap figures: the image, the map overlaid on it, a colour bar, the class name and score.

Figures are ``matplotlib.figure.Figure`` objects built without pyplot: nothing here selects a backend or
keeps a global figure alive, so importing caap never changes a notebook's or an application's matplotlib."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure


def to_display(map_2d: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """A ``[h, w]`` map resized to ``size`` ``(H, W)`` for display, as float numpy."""
    m = map_2d.detach().float().cpu()[None, None]  # [1, 1, h, w]
    if tuple(m.shape[-2:]) != tuple(size):
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        m = F.interpolate(m, size=tuple(size), mode=mode, **kwargs)
    return m[0, 0].numpy()


def signed_norm(values: np.ndarray) -> TwoSlopeNorm:
    """A colour scale centred on 0, symmetric in its extent (signed maps: red = for, blue = against)."""
    top = float(np.abs(values).max()) or 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-top, vmax=top)


def colours(values: np.ndarray, signed: bool = True) -> tuple[str, Normalize]:
    """``(colour map, norm)`` for a map: diverging ``RdBu_r`` centred on 0 for signed methods (red = for,
    blue = against), sequential ``inferno`` from 0 for unsigned ones (driven by the method's ``signed``)."""
    if signed:
        return "RdBu_r", signed_norm(values)
    low, top = min(0.0, float(np.min(values))), float(np.max(values))
    return "inferno", Normalize(vmin=low, vmax=top if top > low else low + 1.0)


def _flags(signed: bool | Sequence[bool], n: int) -> list[bool]:
    return [signed] * n if isinstance(signed, bool) else list(signed)


def explanation_figure(
    image: np.ndarray,
    maps: Sequence[torch.Tensor],
    titles: Sequence[str],
    *,
    suptitle: str = "",
    unit: str = "score change",
    outlines: Sequence[np.ndarray | None] | None = None,
    alpha: float = 0.55,
    signed: bool | Sequence[bool] = True,
):
    """One row per map: the image, the overlay with a colour bar.

    Args:
        image: ``[H, W, 3]`` floats in ``[0, 1]``.
        maps: ``[h, w]`` maps (patch grid or pixels), signed.
        titles: one title per map (class name and score).
        outlines: optional ``[H, W]`` boolean masks drawn as contours (ground truth).
        signed: whether the maps are signed (one flag, or one per map): picks the colour map.
    """
    rows = len(maps)
    flags = _flags(signed, rows)
    fig = Figure(figsize=(7.2, 3.4 * rows))
    axes = fig.subplots(rows, 2, squeeze=False)
    size = image.shape[:2]
    for r, (m, title) in enumerate(zip(maps, titles, strict=True)):
        shown = to_display(m, size)
        axes[r, 0].imshow(image)
        axes[r, 0].set_title("input", fontsize=9)
        axes[r, 1].imshow(image)
        cmap, norm = colours(shown, flags[r])
        im = axes[r, 1].imshow(shown, cmap=cmap, norm=norm, alpha=alpha)
        axes[r, 1].set_title(title, fontsize=9)
        mask = outlines[r] if outlines is not None else None
        if mask is not None and np.any(mask):
            for ax in axes[r]:
                ax.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=1.2)
        bar = fig.colorbar(im, ax=axes[r, 1], fraction=0.046, pad=0.04)
        bar.set_label(unit, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def grid_figure(
    images: Sequence[np.ndarray],
    maps: Sequence[torch.Tensor],
    titles: Sequence[str],
    *,
    outlines: Sequence[np.ndarray | None] | None = None,
    columns: int = 4,
    suptitle: str = "",
    alpha: float = 0.6,
    signed: bool | Sequence[bool] = True,
):
    """A grid of overlays, one cell per image (each map on its own colour scale: symmetric around 0 for
    signed maps, from 0 for unsigned ones; ``signed``: one flag or one per map)."""
    n = len(images)
    flags = _flags(signed, n)
    rows = max(1, -(-n // columns))
    cols = min(columns, n)
    fig = Figure(figsize=(2.4 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, m, title) in enumerate(zip(images, maps, titles, strict=True)):
        ax = axes.flat[i]
        shown = to_display(m, image.shape[:2])
        ax.imshow(image)
        cmap, norm = colours(shown, flags[i])
        ax.imshow(shown, cmap=cmap, norm=norm, alpha=alpha)
        mask = outlines[i] if outlines is not None else None
        if mask is not None and np.any(mask):
            ax.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
        ax.set_title(title, fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig
