"""Adapter for timm's Eva family: EVA-02, DINOv3, the ``vit_*_rope_*`` ViTs and Perception Encoder (rotary
position embeddings, SwiGLU, layer scale, registers, average or attention pooling).

Like :class:`~caap.adapters.timm.TimmViTAdapter` it calls timm's own modules in the order of
``Eva.forward_features`` / ``forward_head``. What differs is the rotary embedding: ``Eva._pos_embed`` returns it
beside the tokens, and every block takes it (one per block in the ``rope_mixed`` variants). The adapter keeps it
per token layout, so any batch of runs on the same grid gets the same embedding; runs on a subset of the tokens
(token occlusion, TIS) would need each kept token's own rotation and are refused in one line.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from caap.adapters.timm import TimmViTAdapter
from caap.adapters.views import BlockView, LinearBlock, LinearHead
from caap.core.contexts import Normalization
from caap.core.workspace import Workspace
from caap.errors import UnsupportedModelError


def is_timm_eva(model: nn.Module) -> bool:
    try:
        from timm.models.eva import Eva
    except ImportError:  # pragma: no cover - an old timm
        return False
    return isinstance(model, Eva)


class TimmEvaAdapter(TimmViTAdapter):
    """A timm ``Eva`` model (see the module docstring)."""

    token_subsets = False
    accepts = staticmethod(is_timm_eva)
    family = "a timm Eva model"

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        super().__init__(model, normalization)
        self._rope: dict[tuple, torch.Tensor | None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _head_rows(model: nn.Module) -> tuple[int, ...] | None:
        if getattr(model, "attn_pool", None) is not None or model.global_pool != "token":
            return None
        return (0,)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x, rope = m._pos_embed(m.patch_embed(images))  # [B, N, D], the rotary embedding of this grid
        if rope is not None:
            with self._lock:
                self._rope[self._key(x)] = rope
        return m.norm_pre(x)

    def _key(self, z: torch.Tensor) -> tuple:
        return (int(z.shape[1]), z.device, self.model.training)

    def _rope_for(self, index: int, z: torch.Tensor) -> torch.Tensor | None:
        if getattr(self.model, "rope", None) is None:
            return None
        rope = self._rope.get(self._key(z))
        if rope is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: no rotary embedding for a sequence of {z.shape[1]} tokens (the "
                "rotations belong to the patches' positions: runs on a subset of the tokens are not supported)")
        return rope[index] if getattr(self.model, "rope_mixed", False) else rope

    def run_block(self, index: int, z: torch.Tensor) -> torch.Tensor:
        return self.model.blocks[index](z, rope=self._rope_for(index, z))

    def run_block_rows(self, index: int, z: torch.Tensor, rows: int) -> torch.Tensor | None:
        return None

    def run_block_inplace(self, index: int, z: torch.Tensor, workspace: Workspace) -> torch.Tensor | None:
        return None

    def block_view(self, index: int) -> BlockView:
        raise self.unsupported("block_view (an Eva block rotates its queries and keys by position; CAAP's fast "
                               "mode needs a plain timm Block)")

    def linear_block(self, index: int) -> LinearBlock:
        raise self.unsupported("linear_block (an Eva block: rotary queries and keys, gated MLPs)")

    def linear_head(self) -> LinearHead:
        raise self.unsupported("linear_head (an Eva model)")

    def head_modules(self) -> list[nn.Module]:
        return self._modules_named(("head", "fc_norm"))
