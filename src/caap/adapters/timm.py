"""Adapter for timm ``VisionTransformer`` and its subclasses (DeiT distilled, DeiT-3, registers, CLIP…).

The adapter calls timm's own modules in the order of ``VisionTransformer.forward_features`` /
``forward_head``; it never copies their code, so pooling variants (token, avg, attention pool, distilled
heads) are exactly the model's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from caap.adapters.base import Adapter
from caap.core.contexts import Normalization
from caap.errors import UnsupportedModelError


def is_timm_vit(model: nn.Module) -> bool:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a runtime dependency
        return False
    return isinstance(model, VisionTransformer)


class TimmViTAdapter(Adapter):
    """A timm ``VisionTransformer`` (any subclass that keeps its ``forward_features`` structure)."""

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        if not is_timm_vit(model):
            raise UnsupportedModelError(f"TimmViTAdapter needs a timm VisionTransformer, got {type(model).__name__}")
        self.model = model
        self.num_prefix = int(model.num_prefix_tokens)
        self.normalization = normalization or _timm_normalization(model)
        self.head_rows = self._head_rows(model)

    @staticmethod
    def _head_rows(model: nn.Module) -> tuple[int, ...] | None:
        if getattr(model, "attn_pool", None) is not None:
            return None
        if type(model).__name__ == "VisionTransformerDistilled":
            return (0, 1)
        if model.global_pool == "token":
            return (0,)
        return None

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.model.blocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.patch_embed(images)  # [B, gh, gw, D] or [B, gh*gw, D]
        x = m._pos_embed(x)  # [B, N, D] with prefix tokens
        x = m.patch_drop(x)
        return m.norm_pre(x)

    def run_block(self, index: int, z: torch.Tensor) -> torch.Tensor:
        return self.model.blocks[index](z)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(z))

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        pe = self.model.patch_embed
        if getattr(self.model, "dynamic_img_size", False) and hasattr(pe, "dynamic_feat_size"):
            return tuple(pe.dynamic_feat_size(tuple(input_size)))
        expected = tuple(pe.img_size)
        if tuple(input_size) != expected:
            raise UnsupportedModelError(
                f"input size {tuple(input_size)} does not match the model's img_size {expected} "
                "(create the timm model with dynamic_img_size=True for other sizes)"
            )
        return tuple(pe.grid_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.model.patch_embed.patch_size)


def _timm_normalization(model: nn.Module) -> Normalization:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean and std:
        return Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    return Normalization()
