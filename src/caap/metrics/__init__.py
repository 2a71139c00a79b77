"""Evaluation metrics for attribution maps: ``caap.metrics.get(name)(**config)(model, images, targets, maps, masks)``.

Every metric returns one score per image and declares ``higher_is_better``, ``needs_model``, ``needs_masks``.
Built-in metrics register themselves when this package is imported; ``register`` adds a user's own.
"""

from __future__ import annotations

from caap.metrics.base import METRICS, CurveMetric, Metric, Scored, register
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
from caap.metrics.protocols import (
    CheferNegativePerturbation,
    CheferPositivePerturbation,
    TISDeletion,
    TISInsertion,
)
from caap.metrics.quantus import QuantusMetric
from caap.metrics.road import ROAD, ROADLeastRelevantFirst, ROADMostRelevantFirst
from caap.metrics.sanity import Randomization

available = METRICS.available
get = METRICS.get
build = METRICS.build

__all__ = ["METRICS", "CheferNegativePerturbation", "CheferPositivePerturbation", "CurveMetric", "Deletion",
           "EnergyPointingGame", "Insertion", "Metric", "NegativePerturbation", "PointingGame",
           "PositivePerturbation", "QuantusMetric", "ROAD", "ROADLeastRelevantFirst", "ROADMostRelevantFirst",
           "Randomization", "RelevanceMass", "RelevanceRank", "Scored", "SegmentationAP", "SegmentationMIoU",
           "SegmentationPixelAccuracy", "Sparseness", "TISDeletion", "TISInsertion", "available", "build", "get",
           "patch_mask", "pointing_game_hits", "register"]
