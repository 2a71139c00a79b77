"""Blocks seen as token-wise pieces around one softmax attention (for CAAP's fast mode).

A pre-norm transformer block computes, for its input ``x`` ``[..., N, D]``::

    (q, k, v) = qkv(norm1(x))                     # [..., N, H, hd] each (q/k norms applied)
    o = softmax(q kᵀ · scale) v                   # [..., N, H, hd]: the attention output per head
    h = x + ls1(proj(o))                          # proj: output norm + output projection, on [..., N, H·hd]
    out = h + ls2(mlp(norm2(h)))

Everything except the softmax mixing is per token, so a caller can follow one token through a block with
the other tokens' keys and values held fixed. Each adapter builds a :class:`BlockView` from the real
modules (no copied code); ``view.forward(x)`` must equal ``block(x)`` (tested on every adapter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BlockView:
    """One block as token-wise pieces (see the module docstring); every callable works on any leading shape."""

    heads: int
    head_dim: int
    scale: float
    norm1: Fn
    qkv: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # y [..., D] -> 3 x [..., H, hd]
    proj: Fn  # o [..., H * hd] -> [..., D]
    ls1: Fn
    norm2: Fn
    mlp: Fn
    ls2: Fn

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` ``[..., D]`` -> ``(q, k, v)``, each ``[..., H, hd]``."""
        return self.qkv(self.norm1(x))

    def finish(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The block's output from its input ``x`` ``[..., D]`` and attention output ``o`` ``[..., H, hd]``."""
        h = x + self.ls1(self.proj(o.flatten(-2)))
        return h + self.ls2(self.mlp(self.norm2(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The whole block on ``x`` ``[B, N, D]`` (a reference for tests)."""
        q, k, v = (t.transpose(1, 2) for t in self.project(x))  # [B, H, N, hd]
        o = F.scaled_dot_product_attention(q, k, v, scale=self.scale).transpose(1, 2)  # [B, N, H, hd]
        return self.finish(x, o)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``[..., H * hd]`` -> ``[..., H, hd]``."""
    return t.unflatten(-1, (heads, -1))


@dataclass(frozen=True)
class LinearBlock:
    """A pre-norm block whose maps are named layers, for relevance propagation (Chefer et al.'s rules,
    AttnLRP): :class:`BlockView`'s norms and attention geometry, plus the linear layers themselves.

    ``qkv`` is one fused ``nn.Linear`` (outputs ``[q | k | v]``, each ``H · hd`` wide) or three (q, k, v).
    ``ls1`` / ``ls2`` are the layer-scale vectors ``[D]`` (``None``: no layer scale). The MLP is
    ``fc2(act(fc1(·)))``. Query/key norms, the attention's output norm and the MLP's inner norm must be
    identities (the adapter refuses otherwise)."""

    view: BlockView
    qkv: tuple[nn.Linear, ...]
    proj: nn.Linear
    fc1: nn.Linear
    act: Fn
    fc2: nn.Linear
    ls1: torch.Tensor | None
    ls2: torch.Tensor | None


@dataclass(frozen=True)
class LinearHead:
    """The head as ``classifier(fc_norm(pool(norm(z))))``.

    ``pool``: ``"token"`` (row 0), ``"mean"`` (mean of the patch tokens, rows ``num_prefix:``),
    ``"token+mean"`` (row 0 and the patch-token mean concatenated, as DINOv2's classifier) or ``"distilled"``
    (``(classifier(row 0) + classifier_dist(row 1)) / 2``, DeiT's distilled models)."""

    norm: Fn
    pool: str
    fc_norm: Fn
    classifier: nn.Linear
    classifier_dist: nn.Linear | None = None
