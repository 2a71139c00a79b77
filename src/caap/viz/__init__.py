"""Figures: heatmap overlays and grids, as ``matplotlib.figure.Figure`` objects (no backend switch)."""

from caap.viz.heatmap import colours, explanation_figure, grid_figure, signed_norm, to_display

__all__ = ["colours", "explanation_figure", "grid_figure", "signed_norm", "to_display"]
