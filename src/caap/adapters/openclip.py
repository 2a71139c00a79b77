"""Adapter for open_clip's vision towers (``open_clip.transformer.VisionTransformer``: CLIP ViT-B/32, B/16, L/14…).

The tower is ``_embeds`` (patch convolution, class embedding, positions, ``ln_pre``) -> the residual attention
blocks -> ``_pool`` (``ln_post`` and token / average / attention pooling) -> the projection; the adapter calls
those very methods and modules, so its forward is the tower's output, the image embedding ``[B, E]``. Alone, the
embedding's dimensions play the classes; with text prompts (:mod:`caap.adapters.zeroshot`) the classes are the
prompts. open_clip's timm-backed towers (SigLIP: ``TimmModel``, a timm ViT trunk and a head) are opened as their
trunk plus that head (:func:`open_clip_timm_adapter`).

The blocks use ``nn.MultiheadAttention``, which never returns its probabilities in the fast path: attention
capture runs each block through its :class:`~caap.adapters.views.BlockView` (the block's own modules, explicit
softmax) for the capture only, and restores the modules' own forward on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from caap.adapters.attention import AttentionMaps
from caap.adapters.base import Adapter
from caap.adapters.capabilities import AttentionCapture, BlockViews
from caap.adapters.card import ModelCard
from caap.adapters.views import BlockView, split_heads
from caap.core.contexts import Normalization
from caap.errors import UnsupportedModelError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def is_open_clip_vit(model: nn.Module) -> bool:
    return type(model).__name__ == "VisionTransformer" and type(model).__module__.startswith("open_clip")


def is_open_clip_timm(model: nn.Module) -> bool:
    return type(model).__name__ == "TimmModel" and type(model).__module__.startswith("open_clip")


def is_open_clip_model(model: nn.Module) -> bool:
    """A whole open_clip image-text model (CLIP, CustomTextCLIP, CoCa): it needs prompts to be a classifier."""
    return type(model).__module__.startswith("open_clip") and hasattr(model, "visual") and hasattr(model,
                                                                                                    "encode_text")


def _stats(model: nn.Module, normalization: Normalization | None) -> Normalization:
    if normalization is not None:
        return normalization
    mean, std = getattr(model, "image_mean", None), getattr(model, "image_std", None)
    return Normalization(tuple(mean or OPENAI_MEAN), tuple(std or OPENAI_STD))


class OpenCLIPAdapter(Adapter, AttentionCapture, BlockViews):
    """An open_clip ``VisionTransformer`` tower (see the module docstring)."""

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        if not is_open_clip_vit(model):
            raise UnsupportedModelError(f"OpenCLIPAdapter needs an open_clip VisionTransformer, got "
                                        f"{type(model).__name__}")
        self.model = model
        self.num_prefix = 1  # the class embedding
        self.normalization = _stats(model, normalization)
        plain = model.attn_pool is None and model.pool_type == "tok"
        self.head_rows = (0,) if plain else None

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.model.transformer.resblocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.model._embeds(images.to(self.model.conv1.weight.dtype))  # [B, N, D]

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        if getattr(self.model.transformer, "batch_first", True):
            return self.blocks[index](z)
        return self.blocks[index](z.transpose(0, 1)).transpose(0, 1)  # the tower runs [N, B, D]

    def head(self, z: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.model._pool(z)  # [B, D]
        return pooled @ self.model.proj if self.model.proj is not None else pooled

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        expected = tuple(self.model.image_size)
        if tuple(input_size) != expected:
            raise UnsupportedModelError(f"input size {tuple(input_size)} does not match the tower's image_size "
                                        f"{expected} (its position embedding has {self.model.grid_size} cells)")
        return tuple(self.model.grid_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.model.patch_size)

    def _read_card(self) -> ModelCard:
        width = self.model.proj.shape[1] if self.model.proj is not None else self.model.ln_post.normalized_shape[0]
        return ModelCard(None, int(width), tuple(self.model.image_size))

    def head_modules(self) -> list[nn.Module]:
        return self._modules_named(("attn_pool", "ln_post"))

    def block_view(self, index: int) -> BlockView:
        block = self.blocks[index]
        attn = block.attn
        if not isinstance(attn, nn.MultiheadAttention) or hasattr(block, "ln_1_kv") or attn.in_proj_weight is None:
            raise self.unsupported(f"block_view for block {index} ({type(attn).__name__}: a self-attention "
                                   "nn.MultiheadAttention with one input projection is needed)")
        heads = attn.num_heads
        head_dim = attn.embed_dim // heads

        def qkv(y: torch.Tensor):
            q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
            return split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)

        return BlockView(heads, head_dim, head_dim**-0.5, block.ln_1, qkv, attn.out_proj, block.ls_1, block.ln_2,
                         block.mlp, block.ls_2)

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionMaps]:
        maps = AttentionMaps(self.num_blocks)
        with contextlib.ExitStack() as stack:
            for index, block in enumerate(self.blocks):
                view = self.block_view(index)
                stack.callback(_restore, block, block.__dict__.get("forward"))
                block.forward = _explicit(view, maps, index, getattr(self.model.transformer, "batch_first", True))
            yield maps


def _explicit(view: BlockView, maps: AttentionMaps, index: int, batch_first: bool):
    """A block's forward with an explicit softmax whose probabilities are recorded (and stay in the graph)."""
    def forward(x: torch.Tensor, attn_mask: torch.Tensor | None = None, **_) -> torch.Tensor:
        if attn_mask is not None:
            raise UnsupportedModelError("attention capture of an open_clip tower with an attention mask")
        z = x if batch_first else x.transpose(0, 1)
        q, k, v = (t.transpose(-3, -2) for t in view.project(z))  # [B, H, N, hd]
        probs = (q @ k.transpose(-1, -2) * view.scale).softmax(-1)  # [B, H, N, N]
        maps.record(index, probs)
        out = view.finish(z, (probs @ v).transpose(-3, -2))
        return out if batch_first else out.transpose(0, 1)

    return forward


def _restore(block: nn.Module, own) -> None:
    """Back to the block's own forward (an instance attribute it had before, or the class's)."""
    if own is None:
        block.__dict__.pop("forward", None)
    else:
        block.forward = own
