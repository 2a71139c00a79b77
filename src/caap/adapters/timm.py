"""Adapter for timm ``VisionTransformer`` and its subclasses (DeiT distilled, DeiT-3, registers, CLIP…).

The adapter calls timm's own modules in the order of ``VisionTransformer.forward_features`` /
``forward_head``; it never copies their code, so pooling variants (token, avg, attention pool, distilled
heads) are exactly the model's. The model card is timm's ``pretrained_cfg``: ``mean``/``std`` give the
normalisation, ``label_names`` the class names, and an optional ``caap`` entry per-model method defaults.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from caap.adapters.attention import AttentionMaps, attn_drop_capture, detach_layernorm_scales
from caap.adapters.base import Adapter
from caap.adapters.capabilities import AttentionCapture, BlockViews, FastPaths, LinearRules
from caap.adapters.card import ModelCard
from caap.adapters.normalization import timm_normalization
from caap.adapters.timm_blocks import autocast_dtype, block_inplace, block_rows, inplace_gelu, plain_block
from caap.adapters.views import BlockView, LinearBlock, LinearHead
from caap.core.contexts import Normalization
from caap.core.workspace import Workspace
from caap.errors import UnsupportedModelError


def is_timm_vit(model: nn.Module) -> bool:
    return isinstance(model, VisionTransformer)


class TimmViTAdapter(Adapter, AttentionCapture, BlockViews, LinearRules, FastPaths):
    """A timm ``VisionTransformer`` (any subclass that keeps its ``forward_features`` structure)."""

    accepts = staticmethod(is_timm_vit)  # the model family this adapter opens (a subclass names its own)
    family = "a timm VisionTransformer"

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        if not self.accepts(model):
            raise UnsupportedModelError(f"{type(self).__name__} needs {self.family}, got {type(model).__name__}")
        self.model = model
        self.num_prefix = int(model.num_prefix_tokens)
        self.normalization = normalization or timm_normalization(model)
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

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return self.model.blocks[index](z)

    def run_block_rows(self, index: int, z: torch.Tensor, rows: int) -> torch.Tensor | None:
        block = self.model.blocks[index]
        if not plain_block(block) or block.training:
            return None
        return block_rows(block, z, rows)

    def run_block_inplace(self, index: int, z: torch.Tensor, workspace: Workspace) -> torch.Tensor | None:
        block = self.model.blocks[index]
        approximate = inplace_gelu(block, z)
        if approximate is None:
            return None
        low = autocast_dtype(z)
        with torch.autocast(z.device.type, enabled=False):  # the path applies autocast's dtypes itself
            return block_inplace(block, z, workspace, approximate, low)

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

    # --- the model card: timm's pretrained_cfg ---------------------------------------------------------
    def _read_card(self) -> ModelCard:
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        classes = int(self.model.num_classes)
        names = cfg.get("label_names")
        if not (names and len(names) == classes):
            names = None
            if classes == 1000:  # a 1000-way timm classifier: ImageNet-1k, timm's own class names
                from timm.data import ImageNetInfo

                info = ImageNetInfo()
                names = [info.index_to_description(i).split(",")[0] for i in range(1000)]
        return ModelCard(tuple(names) if names else None, classes, tuple(self.model.patch_embed.img_size),
                         dict(cfg.get("caap") or {}))

    def head_modules(self) -> list[nn.Module]:
        return self._modules_named(("head", "head_dist", "fc_norm"))

    def block_view(self, index: int) -> BlockView:
        block = self.model.blocks[index]
        if not plain_block(block) or getattr(block.attn, "gate", None) is not None:
            raise self.unsupported(f"block_view for block {index} ({type(block).__name__}: a plain timm Block with "
                                   "Attention and no gate is needed)")
        attn = block.attn
        heads, head_dim = attn.num_heads, attn.head_dim

        def qkv(y: torch.Tensor):
            q, k, v = attn.qkv(y).unflatten(-1, (3, heads, head_dim)).unbind(-3)  # [..., H, hd] each
            return attn.q_norm(q), attn.k_norm(k), v

        return BlockView(heads, head_dim, float(attn.scale), block.norm1, qkv, lambda o: attn.proj(attn.norm(o)),
                         block.ls1, block.norm2, block.mlp, block.ls2)

    def linear_block(self, index: int) -> LinearBlock:
        view = self.block_view(index)
        block = self.model.blocks[index]
        attn, mlp = block.attn, block.mlp
        identities = (attn.q_norm, attn.k_norm, attn.norm, getattr(mlp, "norm", nn.Identity()))
        if not all(isinstance(m, nn.Identity) for m in identities) or not all(
                isinstance(getattr(mlp, n, None), nn.Linear) for n in ("fc1", "fc2")):
            raise self.unsupported(f"linear_block for block {index} (query/key/output norms or a gated MLP: a plain "
                                   "Mlp of two Linear layers and no q/k norm is needed)")
        return LinearBlock(view, (attn.qkv,), attn.proj, mlp.fc1, mlp.act, mlp.fc2, _gamma(block.ls1),
                           _gamma(block.ls2))

    def linear_head(self) -> LinearHead:
        m = self.model
        if self.head_rows == (0, 1) and isinstance(m.head, nn.Linear) and isinstance(m.head_dist, nn.Linear):
            if getattr(m, "distilled_training", False):
                raise self.unsupported("linear_head (a distilled model in distilled-training mode)")
            return LinearHead(m.norm, "distilled", nn.Identity(), m.head, m.head_dist)
        pool = {"token": "token", "avg": "mean"}.get(m.global_pool)
        if pool is None or self.head_rows == (0, 1) or getattr(m, "attn_pool", None) is not None or not isinstance(
                m.head, nn.Linear):
            raise self.unsupported(f"linear_head (global_pool={m.global_pool!r}, {type(m).__name__}: class-token or "
                                   "average pooling into one Linear head is needed)")
        return LinearHead(m.norm, pool, m.fc_norm, m.head)

    def capture_attention(self) -> contextlib.AbstractContextManager[AttentionMaps]:
        """Each block's ``Attention.fused_attn`` is set to ``False`` for the capture (per module, not timm's
        global flag) and the probabilities are read at ``attn_drop``'s output (:func:`attn_drop_capture`)."""
        return attn_drop_capture(self.blocks, AttentionMaps(self.num_blocks), need_fused_flag=True)

    @contextlib.contextmanager
    def conservative(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.capture_attention())
            for block in self.blocks:
                stack.callback(block.attn.attn_drop.register_forward_hook(lambda m, i, out: out.detach()).remove)
            detach_layernorm_scales(self.model, stack)
            yield


def _gamma(module: nn.Module) -> torch.Tensor | None:
    """A timm ``LayerScale``'s vector, ``None`` for an identity."""
    return None if isinstance(module, nn.Identity) else module.gamma
