"""Localisation against ground-truth masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caap.errors import CaapError


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
