"""Attention probabilities captured from the real modules, and the LayerNorm detaching of conservative LRP.

The model-specific switches (timm's per-module ``fused_attn``, Hugging Face's ``_attn_implementation``) live
in each adapter's ``capture_attention`` / ``conservative``; this module holds what they share.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from caap.errors import UnsupportedModelError


class AttentionMaps:
    """Per-block attention probabilities ``[B, heads, N, N]`` of the last forward, in block order."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._maps: dict[int, torch.Tensor] = {}

    def record(self, index: int, probs: torch.Tensor) -> None:
        self._maps.setdefault(index, probs)

    def clear(self) -> None:
        self._maps.clear()

    def get(self) -> list[torch.Tensor]:
        """All blocks' maps; raises if the forward did not go through every block's attention."""
        if len(self._maps) != self.num_blocks:
            raise UnsupportedModelError(
                f"attention capture saw {len(self._maps)} of {self.num_blocks} blocks; the model's attention "
                "modules do not expose their probabilities"
            )
        return [self._maps[i] for i in range(self.num_blocks)]


def detach_layernorm_scales(model: nn.Module, stack: contextlib.ExitStack) -> None:
    """Make every ``nn.LayerNorm`` of ``model`` divide by a detached std (hooks removed by ``stack``)."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            stack.callback(module.register_forward_hook(_ln_detached).remove)


def layer_norm_detached(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with ``1/std`` a constant for autograd (the identity rule of LRP for LayerNorm)."""
    mean = x.mean(-1, keepdim=True)
    std = (x.var(-1, keepdim=True, unbiased=False) + module.eps).sqrt()
    y = (x - mean) / std.detach()
    if module.weight is not None:
        y = y * module.weight
    if module.bias is not None:
        y = y + module.bias
    return y


def _ln_detached(module: nn.LayerNorm, args, out):
    return layer_norm_detached(module, args[0])
