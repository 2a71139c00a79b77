"""Heatmap figures fit for a paper: the photo stays visible, the map's opacity follows ``|map|``, colours are
clipped at a percentile so one outlier pixel cannot wash out the rest, signed methods get a diverging map
centred at 0 and unsigned ones a sequential map, every scale has its colour bar, and patch maps can be shown
patch-exact (``mode="nearest"``).

Figures are ``matplotlib.figure.Figure`` objects built without pyplot: nothing here selects a backend or
keeps a global figure alive, so importing caap never changes a notebook's or an application's matplotlib."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

CLIP = 99.5  # percentile of |map| (signed) or of the map (unsigned) at which the colour scale saturates
ALPHA = 0.85  # opacity of the strongest values; zero values are fully transparent
SIGNED_CMAP, UNSIGNED_CMAP = "RdBu_r", "inferno"


def to_display(map_2d: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """A ``[h, w]`` map resized to ``size`` ``(H, W)`` for display, as float numpy (``"nearest"``: patch-exact)."""
    m = torch.as_tensor(map_2d).detach().float().cpu()[None, None]  # [1, 1, h, w]
    if tuple(m.shape[-2:]) != tuple(size):
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        m = F.interpolate(m, size=tuple(size), mode=mode, **kwargs)
    return m[0, 0].numpy()


def signed_norm(values: np.ndarray, clip: float = CLIP) -> TwoSlopeNorm:
    """A colour scale centred on 0, symmetric, saturating at the ``clip`` percentile of ``|values|``."""
    top = float(np.percentile(np.abs(values), clip)) or float(np.abs(values).max()) or 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-top, vmax=top)


def colours(values: np.ndarray, signed: bool = True, clip: float = CLIP) -> tuple[str, Normalize]:
    """``(colour map, norm)`` for a map: diverging ``RdBu_r`` centred on 0 for signed methods (red = for,
    blue = against), sequential ``inferno`` for unsigned ones (driven by the method's ``signed``), from the
    map's ``100 - clip`` percentile (0 for a map with zeros; the common floor of RISE-like scores otherwise);
    both saturate at the ``clip`` percentile."""
    if signed:
        return SIGNED_CMAP, signed_norm(values, clip)
    low = float(np.percentile(values, 100 - clip))  # an unsigned map's floor (0, or RISE's baseline) is clear
    top = float(np.percentile(values, clip))
    if top <= low:
        top = float(np.max(values)) if np.max(values) > low else low + 1.0
    return UNSIGNED_CMAP, Normalize(vmin=low, vmax=top)


def overlay_rgba(shown: np.ndarray, cmap: str, norm: Normalize, signed: bool, alpha: float = ALPHA) -> np.ndarray:
    """``[H, W, 4]``: the map's colours with opacity ``alpha · |value| / scale`` (0 where the map is 0, full at
    the clipped extreme), so the photo shows where the map says nothing."""
    rgba = colormaps[cmap](norm(np.clip(shown, norm.vmin, norm.vmax)))
    if signed:
        weight = np.abs(shown) / max(abs(norm.vmin), abs(norm.vmax))
    else:
        weight = (shown - norm.vmin) / (norm.vmax - norm.vmin)
    rgba[..., 3] = alpha * np.clip(weight, 0.0, 1.0)
    return rgba


def draw(ax, image: np.ndarray | None, map_2d: torch.Tensor, *, signed: bool, mode: str = "bilinear",
         norm: Normalize | None = None, alpha: float = ALPHA, clip: float = CLIP,
         size: tuple[int, int] | None = None) -> ScalarMappable:
    """Draw ``map_2d`` over ``image`` (``[H, W, 3]`` in [0, 1], or None: the map alone) on ``ax``; returns the
    mappable for a colour bar. ``norm``: a shared scale (else the map's own)."""
    size = tuple(image.shape[:2]) if image is not None else (size or tuple(np.shape(map_2d)[-2:]))
    shown = to_display(map_2d, size, mode)
    cmap, own = colours(shown, signed, clip)
    norm = norm or own
    if image is not None:
        ax.imshow(image)
        ax.imshow(overlay_rgba(shown, cmap, norm, signed, alpha))
    else:
        ax.imshow(shown, cmap=cmap, norm=norm)
    ax.set_xticks([])
    ax.set_yticks([])
    return ScalarMappable(norm=norm, cmap=cmap)


def shared_norm(shown: Sequence[np.ndarray], signed: bool, clip: float = CLIP) -> Normalize:
    """One scale for several maps (the top-k classes of one method)."""
    return colours(np.concatenate([s.ravel() for s in shown]), signed, clip)[1]


def _title(ax, text: str, width: int = 30, size: float = 8) -> None:
    ax.set_title(textwrap.fill(text, width=width), fontsize=size)


def _flags(signed: bool | Sequence[bool], n: int) -> list[bool]:
    return [signed] * n if isinstance(signed, bool) else list(signed)


def explanation_figure(image: np.ndarray, maps: Sequence[torch.Tensor], titles: Sequence[str], *, suptitle: str = "",
                       unit: str = "score change", outlines: Sequence[np.ndarray | None] | None = None,
                       alpha: float = ALPHA, signed: bool = True, mode: str = "bilinear", clip: float = CLIP) -> Figure:
    """One input panel, then one overlay per map (e.g. the top-k classes of one method) on **one shared colour
    scale** with one colour bar.

    Args:
        image: ``[H, W, 3]`` floats in ``[0, 1]``.
        maps: ``[h, w]`` maps (patch grid or pixels) of one method.
        titles: one per map (class name and score); long titles wrap.
        outlines: optional ``[H, W]`` boolean masks drawn as contours (ground truth), one per map.
        signed: whether the method's maps are signed (diverging scale) or not (sequential).
        mode: ``"bilinear"`` or ``"nearest"`` (patch-exact) display of patch maps.
        clip: percentile at which the colour scale saturates.
    """
    n = len(maps)
    fig = Figure(figsize=(2.7 * (n + 1) + 0.7, 3.3), layout="constrained")
    axes = fig.subplots(1, n + 1, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    _title(axes[0], "input")
    size = image.shape[:2]
    norm = shared_norm([to_display(m, size, mode) for m in maps], signed, clip)
    mappable = None
    for i, (m, title) in enumerate(zip(maps, titles, strict=True)):
        mappable = draw(axes[i + 1], image, m, signed=signed, mode=mode, norm=norm, alpha=alpha, clip=clip)
        _title(axes[i + 1], title)
        mask = outlines[i] if outlines is not None else None
        if mask is not None and np.any(mask):
            for ax in (axes[0], axes[i + 1]):
                ax.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=1.2)
    bar = fig.colorbar(mappable, ax=list(axes[1:]), fraction=0.05 / n, pad=0.02)
    bar.set_label(unit, fontsize=8)
    if suptitle:
        fig.suptitle(textwrap.fill(suptitle, width=110), fontsize=9)
    return fig


def grid_figure(images: Sequence[np.ndarray], maps: Sequence[torch.Tensor], titles: Sequence[str], *,
                outlines: Sequence[np.ndarray | None] | None = None, columns: int = 4, suptitle: str = "",
                alpha: float = ALPHA, signed: bool | Sequence[bool] = True, mode: str = "bilinear",
                clip: float = CLIP, colorbars: bool = True) -> Figure:
    """A grid of overlays, one cell per map, each on its own colour scale with its own colour bar (methods
    differ in units); ``signed``: one flag or one per map."""
    n = len(images)
    flags = _flags(signed, n)
    rows = max(1, -(-n // columns))
    cols = min(columns, n)
    fig = Figure(figsize=(2.9 * cols, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, m, title) in enumerate(zip(images, maps, titles, strict=True)):
        ax = axes.flat[i]
        ax.axis("on")
        mappable = draw(ax, image, m, signed=flags[i], mode=mode, alpha=alpha, clip=clip)
        mask = outlines[i] if outlines is not None else None
        if mask is not None and np.any(mask):
            ax.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
        _title(ax, title, width=34, size=7.5)
        if colorbars:
            bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02)
            bar.ax.tick_params(labelsize=6)
    if suptitle:
        fig.suptitle(textwrap.fill(suptitle, width=40 * cols), fontsize=9)
    return fig
