"""Adapter for timm ``VisionTransformer`` and its subclasses (DeiT distilled, DeiT-3, registers, CLIP…).

The adapter calls timm's own modules in the order of ``VisionTransformer.forward_features`` /
``forward_head``; it never copies their code, so pooling variants (token, avg, attention pool, distilled
heads) are exactly the model's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
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

    def run_block_rows(self, index: int, z: torch.Tensor, rows: int) -> torch.Tensor | None:
        block = self.model.blocks[index]
        if not _plain_block(block) or block.training:
            return None
        return _block_rows(block, z, rows)

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


def _plain_block(block: nn.Module) -> bool:
    """A timm ``Block`` with the standard ``Attention`` (the structure ``_block_rows`` reproduces)."""
    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    return type(block) is Block and type(block.attn) is Attention


def _block_rows(block: nn.Module, x: torch.Tensor, rows: int) -> torch.Tensor:
    """Rows ``0 .. rows-1`` of a timm ``Block`` in eval mode; keys and values still come from every token."""
    attn = block.attn
    b, n, _ = x.shape
    heads, head_dim, width = attn.num_heads, attn.head_dim, attn.attn_dim
    y = block.norm1(x)  # [B, N, D]
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = F.linear(y[:, :rows], weight[:width], None if bias is None else bias[:width])  # [B, R, A]
    kv = F.linear(y, weight[width:], None if bias is None else bias[width:])  # [B, N, 2A]
    q = q.reshape(b, rows, heads, head_dim).transpose(1, 2)  # [B, H, R, hd]
    k, v = kv.reshape(b, n, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, hd] each
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)  # [B, H, R, hd]
    out = attn.norm(out.transpose(1, 2).reshape(b, rows, width))  # [B, R, A]
    if attn.gate is not None:
        out = out * attn.gate(y[:, :rows]).sigmoid()
    h = x[:, :rows] + block.ls1(attn.proj(out))  # [B, R, D]
    return h + block.ls2(block.mlp(block.norm2(h)))


def _timm_normalization(model: nn.Module) -> Normalization:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean and std:
        return Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    return Normalization()
