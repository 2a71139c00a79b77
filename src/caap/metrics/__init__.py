"""Evaluation metrics for attribution maps: ``caap.metrics.get(name)(**config)(model, images, targets, maps, masks)``.

Every metric returns one score per image and declares ``higher_is_better``, ``needs_model``, ``needs_masks``.
"""

from __future__ import annotations

from caap.errors import CaapError
from caap.metrics.base import Metric
from caap.metrics.complexity import Sparseness
from caap.metrics.faithfulness import Deletion, Insertion, NegativePerturbation, PositivePerturbation
from caap.metrics.localisation import (
    EnergyPointingGame,
    PointingGame,
    RelevanceMass,
    RelevanceRank,
    SegmentationAP,
    SegmentationMIoU,
    SegmentationPixelAccuracy,
    patch_mask,
    pointing_game_hits,
)
from caap.metrics.sanity import Randomization

METRICS: dict[str, type[Metric]] = {
    m.name: m
    for m in (Deletion, Insertion, PositivePerturbation, NegativePerturbation, PointingGame, EnergyPointingGame,
              RelevanceMass, RelevanceRank, SegmentationPixelAccuracy, SegmentationMIoU, SegmentationAP, Sparseness,
              Randomization)
}


def available() -> list[str]:
    return sorted(METRICS)


def get(name: str) -> type[Metric]:
    if name not in METRICS:
        raise CaapError(f"unknown metric {name!r}; expected one of {available()}")
    return METRICS[name]


__all__ = ["METRICS", "Metric", "available", "get", "patch_mask", "pointing_game_hits"]
