"""Patch groups and the patched runs (variants) they define (docs/METHOD.md, ``groups``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from caap.errors import CaapError


def check_groups(groups: torch.Tensor | None, batch: int, grid: tuple[int, int]) -> torch.Tensor:
    """Group map as int64 ``[B, gh, gw]`` on the CPU (``None``: every patch its own group)."""
    gh, gw = grid
    if groups is None:
        return torch.arange(gh * gw, dtype=torch.int64).view(1, gh, gw).expand(batch, gh, gw)
    if not isinstance(groups, torch.Tensor):
        try:
            groups = torch.as_tensor(groups)
        except (TypeError, ValueError, RuntimeError):
            raise CaapError(f"groups must be an integer map [gh, gw] or [B, gh, gw], got {groups!r}") from None
    if groups.is_floating_point() or groups.dtype == torch.bool:
        raise CaapError(f"groups must be an integer tensor [gh, gw] or [B, gh, gw], got dtype {groups.dtype}")
    if tuple(groups.shape) not in ((gh, gw), (batch, gh, gw)):
        raise CaapError(
            f"groups has shape {tuple(groups.shape)}, expected the patch grid [{gh}, {gw}] or [{batch}, {gh}, {gw}]"
        )
    groups = groups.expand(batch, gh, gw).to("cpu", torch.int64)
    empty = (groups < 0).flatten(1).all(1)
    if bool(empty.any()):
        raise CaapError(f"groups patch nothing in image {int(empty.nonzero()[0, 0])}: every group id is negative")
    return groups


def superpatch_groups(grid: tuple[int, int], size: int) -> torch.Tensor:
    """Group map ``[gh, gw]`` of ``size × size`` superpatches in row-major order (edge ones may be smaller)."""
    gh, gw = grid
    rows = torch.arange(gh)[:, None] // size  # [gh, 1]
    cols = torch.arange(gw)[None, :] // size  # [1, gw]
    return rows * math.ceil(gw / size) + cols  # [gh, gw]


@dataclass
class Variants:
    """The patched runs of a call, sorted by variant.

    ``image[v]`` is the image of variant ``v``; ``(pair_variant, pair_token)`` list every patched token,
    sorted by variant; ``patch_variant[b, p]`` is the variant that patch ``p`` of image ``b`` belongs to
    (``-1`` for a patch with a negative group id: it is never patched).
    """

    image: torch.Tensor  # [V] int64
    pair_variant: torch.Tensor  # [P] int64, P = B * gh * gw
    pair_token: torch.Tensor  # [P] int64 (token index, prefix included)
    patch_variant: torch.Tensor  # [B, gh*gw] int64

    @classmethod
    def from_groups(cls, groups: torch.Tensor, num_prefix: int) -> Variants:
        batch = groups.shape[0]
        flat = groups.reshape(batch, -1)  # [B, P_img]
        images, patch_variant, offset = [], [], 0
        for b in range(batch):
            keep = flat[b] >= 0
            ids, inverse = torch.unique(flat[b][keep], return_inverse=True)
            images.append(torch.full((len(ids),), b, dtype=torch.int64))
            variant = torch.full_like(flat[b], -1)
            variant[keep] = inverse + offset
            patch_variant.append(variant)
            offset += len(ids)
        patch_variant_t = torch.stack(patch_variant)  # [B, P_img]
        pair_variant = patch_variant_t.reshape(-1)
        pair_token = torch.arange(flat.shape[1]).repeat(batch) + num_prefix
        kept = pair_variant >= 0
        pair_variant, pair_token = pair_variant[kept], pair_token[kept]
        order = torch.argsort(pair_variant, stable=True)
        return cls(torch.cat(images), pair_variant[order], pair_token[order], patch_variant_t)

    def __len__(self) -> int:
        return self.image.shape[0]


def spread_groups(grid: tuple[int, int], k: int) -> torch.Tensor:
    """``[gh, gw]`` int64: ``k`` patches spread evenly over the grid in raster order, one group each (0 … k-1), and
    -1 (not patched) elsewhere — a subset call of exact CAAP that costs ``k`` patched runs (timing its growth)."""
    total = grid[0] * grid[1]
    if not 1 <= k <= total:
        raise CaapError(f"k {k!r}: expected 1 to {total} patches of the {grid[0]}x{grid[1]} grid")
    groups = torch.full((total,), -1, dtype=torch.long)
    groups[torch.linspace(0, total - 1, k, dtype=torch.float64).round().long()] = torch.arange(k)
    return groups.view(grid)
