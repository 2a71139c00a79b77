"""Localisation against ground-truth masks: pointing game, energy pointing game, relevance mass and rank."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caap.errors import CaapError
from caap.metrics.base import Metric, to_pixels


def patch_mask(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Which patches touch the mask: bool ``[B, H, W]`` pixel masks -> bool ``[B, gh, gw]``.

    A patch counts as on the object when any of its pixels is (``H`` and ``W`` must be multiples of the grid).
    """
    b, h, w = masks.shape
    gh, gw = grid
    if h % gh or w % gw:
        raise CaapError(f"mask size {(h, w)} is not a multiple of the patch grid {grid}")
    return F.max_pool2d(masks[:, None].float(), kernel_size=(h // gh, w // gw))[:, 0] > 0


def pointing_game_hits(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Whether each map's maximum lies on the object, bool ``[B]``.

    ``maps`` ``[B, h, w]`` (patch grid or pixels), ``masks`` bool ``[B, H, W]``. A patch-level maximum hits
    when its patch touches the mask; ties count as a hit only if every tied maximum is on the object.
    """
    if maps.dim() != 3 or masks.dim() != 3 or maps.shape[0] != masks.shape[0]:
        raise CaapError(f"maps [B, h, w] and masks [B, H, W] must match, got {tuple(maps.shape)}, {tuple(masks.shape)}")
    on = patch_mask(masks, maps.shape[1:]) if maps.shape[1:] != masks.shape[1:] else masks.bool()
    top = maps == maps.flatten(1).max(dim=1).values[:, None, None]
    return (top & on).flatten(1).any(1) & ~(top & ~on).flatten(1).any(1)


class PointingGame(Metric):
    """1 when the map's maximum lies on the object (Zhang et al. 2018), else 0."""

    name = "pointing_game"
    needs_masks = True

    def evaluate(self, model, images, targets, maps, masks):
        return pointing_game_hits(maps, masks).float()


class EnergyPointingGame(Metric):
    """Share of the positive attribution inside the mask (Wang et al. 2020, Score-CAM), at pixel resolution."""

    name = "energy_pointing_game"
    needs_masks = True

    def evaluate(self, model, images, targets, maps, masks):
        pos = to_pixels(maps, masks.shape[-2:]).clamp(min=0)
        total = pos.flatten(1).sum(1)
        return torch.where(total > 0, (pos * masks).flatten(1).sum(1) / total.clamp(min=1e-30), 0.0)


class RelevanceMass(Metric):
    """Relevance mass accuracy (Arras et al. 2022): attribution inside the mask over the total attribution,
    at pixel resolution (the map as is, as Quantus)."""

    name = "relevance_mass"
    needs_masks = True

    def evaluate(self, model, images, targets, maps, masks):
        px = to_pixels(maps, masks.shape[-2:])
        return (px * masks).flatten(1).sum(1) / px.flatten(1).sum(1)


class RelevanceRank(Metric):
    """Relevance rank accuracy (Arras et al. 2022): share of the K highest-ranked pixels that lie in the mask,
    K = the mask's size."""

    name = "relevance_rank"
    needs_masks = True

    def evaluate(self, model, images, targets, maps, masks):
        px = to_pixels(maps, masks.shape[-2:]).flatten(1)
        flat = masks.flatten(1)
        out = torch.zeros(px.shape[0])
        for b in range(px.shape[0]):
            k = int(flat[b].sum())
            if k:
                top = torch.argsort(px[b], descending=True, stable=True)[:k]
                out[b] = flat[b, top].float().mean()
        return out
