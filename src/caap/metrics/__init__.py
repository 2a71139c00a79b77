"""Evaluation metrics for attribution maps."""

from caap.metrics.localisation import patch_mask, pointing_game_hits

__all__ = ["patch_mask", "pointing_game_hits"]
