"""Localisation against ground-truth masks: pointing game, energy pointing game, relevance mass and rank."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caap.errors import CaapError
from caap.metrics.base import Metric, register, to_grid, to_pixels

RESOLUTIONS = ("pixel", "patch")


def _resolution(value) -> str:
    if value not in RESOLUTIONS:
        raise CaapError(f"resolution must be 'pixel' or 'patch', got {value!r}")
    return value


def patch_view(model, maps: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The method's own resolution for a fair comparison of patch and pixel methods: ``(maps [B, gh, gw],
    coverage [B, gh, gw])`` — pixel maps averaged over each patch, the region (bool ``[B, H, W]``) as the share
    of each patch it covers. The grid is the maps' own when they are patch maps, else the model's."""
    size = tuple(region.shape[-2:])
    if tuple(maps.shape[-2:]) != size:
        grid = tuple(maps.shape[-2:])
    elif model is not None:
        from caap.adapters import adapt

        grid = adapt(model).grid(size)
    else:
        raise CaapError("resolution='patch' on pixel maps needs the model (its patch grid)")
    return to_grid(maps, grid), to_grid(region.float(), grid)


def _share_inside(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``Σ values · region / Σ values`` per image (0 where the total is 0); both ``[B, h, w]``."""
    total = values.flatten(1).sum(1)
    return torch.where(total > 0, (values * region).flatten(1).sum(1) / total.clamp(min=1e-30), 0.0)


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


@register
class PointingGame(Metric):
    """1 when the map's maximum lies on the object (Zhang et al. 2018), else 0 (no tolerance margin).

    One rule for patch and pixel maps, ``resolution``:

    - ``"patch"`` (default): pixel maps are averaged over each patch of the model's grid first; the maximum
      patch hits when it touches the mask. A patch method and a pixel method are judged on the same grid, the
      resolution the model sees.
    - ``"pixel"``: patch maps are repeated to pixels first; the maximum pixel must lie on the mask.

    Either way, tied maxima hit only if every one of them does.
    """

    name = "pointing_game"
    needs_masks = True
    binary = True

    def __init__(self, resolution: str = "patch") -> None:
        self.resolution = _resolution(resolution)

    def evaluate(self, model, images, targets, maps, masks):
        if self.resolution == "patch":
            maps, _ = patch_view(model, maps, masks)
        else:
            maps = to_pixels(maps, masks.shape[-2:])
        return pointing_game_hits(maps, masks).float()


@register
class EnergyPointingGame(Metric):
    """Share of the positive attribution inside the object's bounding box (Wang et al. 2020, Score-CAM).
    ``box=False`` uses the mask itself, which equals positive relevance mass. ``resolution="patch"``: on the
    patch grid (pixel maps averaged per patch, the box as each patch's covered share), so that patch-level and
    pixel-level methods are compared at the resolution the model sees."""

    name = "energy_pointing_game"
    needs_masks = True

    def __init__(self, box: bool = True, resolution: str = "pixel") -> None:
        if not isinstance(box, bool):
            raise CaapError(f"box must be True or False, got {box!r}")
        self.box, self.resolution = box, _resolution(resolution)

    def evaluate(self, model, images, targets, maps, masks):
        region = bounding_boxes(masks) if self.box else masks
        if self.resolution == "patch":
            values, cover = patch_view(model, maps, region)
            return _share_inside(values.clamp(min=0), cover)
        return _share_inside(to_pixels(maps, masks.shape[-2:]).clamp(min=0), region.float())


def bounding_boxes(masks: torch.Tensor) -> torch.Tensor:
    """bool ``[B, H, W]``: the smallest axis-aligned box around each mask (empty stays empty)."""
    rows, cols = masks.any(2), masks.any(1)  # [B, H], [B, W]

    def span(on: torch.Tensor) -> torch.Tensor:  # [B, n] -> bool [B, n] between first and last True
        idx = torch.arange(on.shape[1])
        first = torch.where(on, idx, on.shape[1]).min(1, keepdim=True).values
        last = torch.where(on, idx, -1).max(1, keepdim=True).values
        return (idx >= first) & (idx <= last)

    return span(rows)[:, :, None] & span(cols)[:, None, :]


@register
class RelevanceMass(Metric):
    """Relevance mass accuracy (Arras et al. 2022): attribution inside the mask over the total attribution,
    at pixel resolution.

    ``positive=True`` (default, as Arras et al.) counts positive relevance only, which keeps the ratio in
    [0, 1] for signed maps (0 for a map with no positive relevance); ``positive=False`` takes the map as is
    (Quantus's ``RelevanceMassAccuracy``), whose ratio is unbounded when a signed map sums to about zero.
    ``resolution="patch"``: on the patch grid, the mask as each patch's covered share (see
    :func:`patch_view`); for patch maps it equals the pixel version, for pixel maps it pools them first.
    """

    name = "relevance_mass"
    needs_masks = True

    def __init__(self, positive: bool = True, resolution: str = "pixel") -> None:
        if not isinstance(positive, bool):
            raise CaapError(f"positive must be True or False, got {positive!r}")
        self.positive, self.resolution = positive, _resolution(resolution)

    def evaluate(self, model, images, targets, maps, masks):
        if self.resolution == "patch":
            values, cover = patch_view(model, maps, masks)
            if self.positive:
                return _share_inside(values.clamp(min=0), cover)
            return (values * cover).flatten(1).sum(1) / values.flatten(1).sum(1)
        px = to_pixels(maps, masks.shape[-2:])
        if self.positive:
            px = px.clamp(min=0)
        inside, total = (px * masks).flatten(1).sum(1), px.flatten(1).sum(1)
        if self.positive:
            return torch.where(total > 0, inside / total.clamp(min=1e-30), torch.zeros_like(total))
        return inside / total


@register
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


def _segmentation_inputs(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Maps at pixel resolution (bilinear, as Chefer et al.'s evaluation), min-max scaled per image."""
    px = maps[:, None].float()
    if tuple(maps.shape[-2:]) != tuple(masks.shape[-2:]):
        px = F.interpolate(px, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False)
    px = px[:, 0].flatten(1)
    lo, hi = px.min(1, keepdim=True).values, px.max(1, keepdim=True).values
    return (px - lo) / (hi - lo).clamp(min=1e-12)


@register
class SegmentationPixelAccuracy(Metric):
    """Chefer et al.'s ImageNet-segmentation protocol, per image: the map thresholded at its mean is a
    foreground prediction; the score is the share of correctly labelled pixels."""

    name = "segmentation_pixel_accuracy"
    needs_masks = True

    def evaluate(self, model, images, targets, maps, masks):
        px = _segmentation_inputs(maps, masks)
        pred = px > px.mean(1, keepdim=True)
        return (pred == masks.flatten(1)).float().mean(1)


@register
class SegmentationMIoU(Metric):
    """Mean over {object, background} of the IoU of the mean-thresholded map with the mask, per image."""

    name = "segmentation_miou"
    needs_masks = True

    def evaluate(self, model, images, targets, maps, masks):
        px = _segmentation_inputs(maps, masks)
        pred, truth = px > px.mean(1, keepdim=True), masks.flatten(1)
        ious = []
        for p, t in ((pred, truth), (~pred, ~truth)):
            inter, union = (p & t).sum(1).float(), (p | t).sum(1).float()
            ious.append(torch.where(union > 0, inter / union.clamp(min=1), 1.0))
        return (ious[0] + ious[1]) / 2


@register
class SegmentationAP(Metric):
    """Average precision of the map's pixel scores for the mask (the protocol's mAP, per image); tied scores
    form one threshold, as scikit-learn's ``average_precision_score``."""

    name = "segmentation_ap"
    needs_masks = True

    def evaluate(self, model, images, targets, maps, masks):
        px = _segmentation_inputs(maps, masks)
        truth = masks.flatten(1).float()
        out = torch.zeros(px.shape[0])
        for b in range(px.shape[0]):
            positives = truth[b].sum()
            if positives == 0:
                continue
            scores, order = torch.sort(px[b], descending=True, stable=True)
            tp = truth[b, order].cumsum(0)
            ends = torch.nonzero(torch.diff(scores, append=scores[-1:] - 1) != 0)[:, 0]  # last of each tie group
            precision = tp[ends] / (ends + 1).float()
            recall = tp[ends] / positives
            out[b] = (torch.diff(recall, prepend=recall.new_zeros(1)) * precision).sum()
        return out
