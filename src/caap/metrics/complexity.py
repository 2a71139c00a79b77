"""Complexity of a map."""

from __future__ import annotations

import torch

from caap.metrics.base import Metric, register


@register
class Sparseness(Metric):
    """Gini index of ``|map|`` (Chalasani et al. 2020): 0 for a uniform map, → 1 for a single spike."""

    name = "sparseness"

    def evaluate(self, model, images, targets, maps, masks):
        a = maps.abs().flatten(1).sort(dim=1).values + 1e-7  # [B, n], ascending
        n = a.shape[1]
        k = torch.arange(1, n + 1, dtype=a.dtype)
        return ((2 * k - n - 1) * a).sum(1) / (n * a.sum(1))
