"""Adapter for timm's Eva family: EVA-02, DINOv3, the ``vit_*_rope_*`` ViTs and Perception Encoder (rotary
position embeddings, SwiGLU, layer scale, registers, average or attention pooling).

Like :class:`~caap.adapters.timm.TimmViTAdapter` it calls timm's own modules in the order of
``Eva.forward_features`` / ``forward_head``. What differs is the rotary embedding: ``Eva._pos_embed`` returns it
beside the tokens, and every block takes it (one per block in the ``rope_mixed`` variants). ``run_block`` computes
it from the ``grid`` its caller passes, as ``Eva._pos_embed`` does, so nothing is carried from ``embed`` to
``run_block``; runs on a subset of the tokens (token occlusion, TIS) would need each kept token's own rotation
and are refused in one line.
"""

from __future__ import annotations

import torch
from torch import nn

from caap.adapters.timm import TimmViTAdapter
from caap.adapters.views import BlockView, LinearBlock, LinearHead
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

    @staticmethod
    def _head_rows(model: nn.Module) -> tuple[int, ...] | None:
        if getattr(model, "attn_pool", None) is not None or model.global_pool != "token":
            return None
        return (0,)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x, _ = m._pos_embed(m.patch_embed(images))  # [B, N, D]; the rotation is run_block's (from the grid)
        return m.norm_pre(x)

    def rope(self, z: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor | None:
        """The rotary embedding of the grid ``z`` ``[B, N, D]`` runs on (all blocks' in ``rope_mixed``), or None."""
        m = self.model
        if getattr(m, "rope", None) is None:
            return None
        if m.dynamic_img_size:
            return m.rope.get_embed(shape=list(self.stream_grid(z, grid)))
        own = tuple(m.patch_embed.grid_size)
        if self.stream_grid(z, grid) != own:
            raise UnsupportedModelError(f"{type(m).__name__}: a stream of {z.shape[1]} tokens on grid {grid} is not "
                                        f"the model's grid {own} (runs on a subset of the tokens are not supported)")
        return m.rope.get_embed() if hasattr(m.rope, "feat_shape") else m.rope.get_embed(shape=list(own))

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        rope = self.rope(z, grid)
        if rope is not None and getattr(self.model, "rope_mixed", False):
            rope = rope[index]
        return self.model.blocks[index](z, rope=rope)

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
