"""Attention probabilities captured from the real modules, and the LayerNorm detaching of conservative LRP.

The one home of attention capture: :func:`attn_drop_capture` (timm's attention modules: the fused path switched
off per module, the probabilities read at ``attn_drop``) and :func:`eager_capture` (Hugging Face: every config's
``_attn_implementation`` set to ``"eager"``, the probabilities read from the attention modules' outputs). Every
switch is restored and every hook removed on exit, on every path. An adapter's ``capture_attention`` says which
modules to read; open_clip's blocks, whose attention never returns its probabilities, are re-run through their
block views instead (:mod:`caap.adapters.openclip`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

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


@contextlib.contextmanager
def attn_drop_capture(blocks: Sequence[nn.Module], maps: AttentionMaps,
                      need_fused_flag: bool = False) -> Iterator[AttentionMaps]:
    """timm: the attention probabilities at each block's ``attn.attn_drop``, with the fused path (``fused_attn``)
    switched off per module for the capture (not timm's global flag); ``need_fused_flag``: refuse a block whose
    attention has no such flag (one that is not timm's ``Attention``)."""
    with contextlib.ExitStack() as stack:
        for index, block in enumerate(blocks):
            attn = getattr(block, "attn", None)
            if attn is None or not hasattr(attn, "attn_drop") or (need_fused_flag and not hasattr(attn, "fused_attn")):
                raise UnsupportedModelError(f"block {index} ({type(block).__name__}) has no timm Attention whose "
                                            "probabilities can be read")
            if hasattr(attn, "fused_attn"):
                stack.callback(setattr, attn, "fused_attn", attn.fused_attn)
                attn.fused_attn = False
            stack.callback(attn.attn_drop.register_forward_hook(
                lambda m, i, out, index=index: maps.record(index, out)).remove)
        yield maps


@contextlib.contextmanager
def eager_capture(model: nn.Module, modules: Sequence[tuple[int, nn.Module]], maps: AttentionMaps,
                  read: Callable[[object], torch.Tensor | None] | None = None) -> Iterator[AttentionMaps]:
    """Hugging Face: every distinct config of ``model`` set to eager attention for the capture, and the
    probabilities of block ``index`` read from each ``(index, module)``'s output by ``read`` (default: the second
    element of a tuple output when it is ``[B, heads, N, N]``)."""
    read = read or _second_of_tuple
    configs = list({id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values())
    with contextlib.ExitStack() as stack:
        for config in configs:
            stack.callback(setattr, config, "_attn_implementation", config._attn_implementation)
            config._attn_implementation = "eager"
        for index, module in modules:
            def hook(m, args, out, index=index):
                probs = read(out)
                if probs is not None:
                    maps.record(index, probs)

            stack.callback(module.register_forward_hook(hook).remove)
        yield maps


def _second_of_tuple(out) -> torch.Tensor | None:
    if isinstance(out, tuple) and len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].dim() == 4:
        return out[1]
    return None
