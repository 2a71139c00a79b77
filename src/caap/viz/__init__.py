"""Figures: heatmap overlays and grids, as ``matplotlib.figure.Figure`` objects (no backend switch).

A ground layer: it imports nothing else of caap, so the result type itself can draw (``Attribution.plot``)."""

from caap.viz.heatmap import (
    CLIP,
    colours,
    draw,
    explanation_figure,
    grid_figure,
    overlay_rgba,
    shared_norm,
    signed_norm,
    to_display,
)

__all__ = ["CLIP", "colours", "draw", "explanation_figure", "grid_figure", "overlay_rgba", "shared_norm",
           "signed_norm", "to_display"]
