"""Adapter for Hugging Face CLIP and SigLIP image towers: ``CLIPVisionModel``, ``CLIPVisionModelWithProjection``,
``SiglipVisionModel``, and ``CLIPModel`` / ``SiglipModel`` as image encoders.

CLIP: ``embeddings`` (class token, patches, positions) -> ``pre_layrnorm`` -> the encoder layers -> the class
token through ``post_layernorm`` -> ``visual_projection`` where the model has one: its output is what
``get_image_features`` / the tower's ``pooler_output`` gives, the image embedding ``[B, E]``. SigLIP: no class
token; ``post_layernorm`` on every token, then the attention-pooling ``head``. The embedding's dimensions play the
classes; with text prompts (:mod:`caap.adapters.zeroshot`) the prompts are the classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from caap.adapters.attention import AttentionMaps, eager_capture
from caap.adapters.base import Adapter
from caap.adapters.capabilities import AttentionCapture, BlockViews
from caap.adapters.card import ModelCard
from caap.adapters.normalization import hf_normalization
from caap.adapters.views import BlockView, split_heads
from caap.core.contexts import Normalization
from caap.errors import UnsupportedModelError

TOWERS = ("CLIPVisionModel", "CLIPVisionModelWithProjection", "CLIPModel", "SiglipVisionModel", "SiglipModel")


def is_hf_image_tower(model: nn.Module) -> bool:
    return type(model).__name__ in TOWERS and type(model).__module__.startswith("transformers.")


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class HFImageTowerAdapter(Adapter, AttentionCapture, BlockViews):
    """A Hugging Face CLIP or SigLIP image tower (see the module docstring)."""

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        if not is_hf_image_tower(model):
            raise UnsupportedModelError(f"HFImageTowerAdapter supports {TOWERS}, got {type(model).__name__}")
        vision = model
        while hasattr(vision, "vision_model"):
            vision = vision.vision_model
        self.model, self.vision = model, vision
        self.projection = getattr(model, "visual_projection", None)
        self.clip = hasattr(vision, "pre_layrnorm")
        if not self.clip and not getattr(vision, "use_head", False):
            raise UnsupportedModelError(f"{type(model).__name__} without its attention-pooling head has no image "
                                        "embedding (vision_use_head=False)")
        self.config = vision.config
        self.num_prefix = 1 if self.clip else 0
        self.normalization = normalization or hf_normalization(model)
        self.head_rows = (0,) if self.clip else None

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.vision.encoder.layers

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        weight = self.vision.embeddings.patch_embedding.weight
        z = self.vision.embeddings(images.to(weight.dtype))  # [B, N, D]
        return self.vision.pre_layrnorm(z) if self.clip else z

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        out = self.blocks[index](z, attention_mask=None)
        return out[0] if isinstance(out, tuple) else out

    def head(self, z: torch.Tensor) -> torch.Tensor:
        if self.clip:
            pooled = self.vision.post_layernorm(z[:, 0])  # [B, D]
        else:
            pooled = self.vision.head(self.vision.post_layernorm(z))  # [B, D]
        return self.projection(pooled) if self.projection is not None else pooled

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        expected = _pair(self.config.image_size)
        if tuple(input_size) != expected:
            raise UnsupportedModelError(f"input size {tuple(input_size)} does not match the model's image_size "
                                        f"{expected}")
        ph, pw = self.patch_size
        return (expected[0] // ph, expected[1] // pw)

    @property
    def patch_size(self) -> tuple[int, int]:
        return _pair(self.config.patch_size)

    def _read_card(self) -> ModelCard:
        width = self.projection.out_features if self.projection is not None else int(self.config.hidden_size)
        return ModelCard(None, int(width), _pair(self.config.image_size))

    def head_modules(self) -> list[nn.Module]:
        found = [m for m in (self.vision.post_layernorm, getattr(self.vision, "head", None), self.projection)
                 if isinstance(m, nn.Module)]
        return found

    def block_view(self, index: int) -> BlockView:
        layer = self.blocks[index]
        attn = layer.self_attn
        heads, head_dim = attn.num_heads, attn.head_dim

        def qkv(y: torch.Tensor):
            return (split_heads(attn.q_proj(y), heads), split_heads(attn.k_proj(y), heads),
                    split_heads(attn.v_proj(y), heads))

        return BlockView(heads, head_dim, float(attn.scale), layer.layer_norm1, qkv, attn.out_proj, nn.Identity(),
                         layer.layer_norm2, layer.mlp, nn.Identity())

    def capture_attention(self) -> contextlib.AbstractContextManager[AttentionMaps]:
        """Eager attention for the capture; the weights read from each layer's attention output
        (:func:`eager_capture`)."""
        return eager_capture(self.model, list(enumerate(layer.self_attn for layer in self.blocks)),
                             AttentionMaps(self.num_blocks), read=lambda out: out[1])
