"""Figures: heatmap overlays and grids."""

from caap.viz.heatmap import close, explanation_figure, grid_figure, signed_norm, to_display

__all__ = ["close", "explanation_figure", "grid_figure", "signed_norm", "to_display"]
