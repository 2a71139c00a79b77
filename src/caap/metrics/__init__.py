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
    """The metric class for ``name``; a spec with options (``"deletion:step=4"``) names its base metric."""
    base = name.split(":", 1)[0]
    if base not in METRICS:
        raise CaapError(f"unknown metric {base!r}; expected one of {available()}")
    return METRICS[base]


def build(spec: str) -> Metric:
    """A configured metric from ``NAME[:KEY=VALUE[:KEY=VALUE…]]``, e.g. ``"deletion:step=4:canvas=blur"``."""
    from caap.specs import parse_spec

    name, kwargs = parse_spec(spec, "metric")
    try:
        return get(name)(**kwargs)
    except TypeError as exc:
        raise CaapError(f"metric {spec!r}: {exc}") from None


__all__ = ["METRICS", "Metric", "available", "build", "get", "patch_mask", "pointing_game_hits"]
