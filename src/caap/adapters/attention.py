"""Capturing attention probabilities from the real modules, with every switch restored on exit.

timm: each block's ``Attention.fused_attn`` is set to ``False`` for the capture (per module, not the global
flag) and the probabilities are read at ``attn_drop``'s output. Hugging Face: every config's
``_attn_implementation`` is set to ``"eager"`` and the weights are read from the attention module's output.
A capture that saw fewer maps than blocks raises instead of returning partial results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from caap.adapters.base import Adapter
from caap.adapters.hf import HFViTAdapter
from caap.adapters.timm import TimmViTAdapter
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


@contextlib.contextmanager
def capture_attention(adapter: Adapter) -> Iterator[AttentionMaps]:
    """Context manager: ``maps.get()`` after a forward gives each block's attention probabilities."""
    maps = AttentionMaps(adapter.num_blocks)
    handles, restore = [], []
    try:
        if isinstance(adapter, TimmViTAdapter):
            for index, block in enumerate(adapter.blocks):
                attn = getattr(block, "attn", None)
                if attn is None or not hasattr(attn, "attn_drop") or not hasattr(attn, "fused_attn"):
                    raise UnsupportedModelError(f"block {index} ({type(block).__name__}) has no timm Attention")
                restore.append((attn, "fused_attn", attn.fused_attn))
                attn.fused_attn = False
                handles.append(attn.attn_drop.register_forward_hook(
                    lambda m, i, out, index=index: maps.record(index, out)))
        elif isinstance(adapter, HFViTAdapter):
            for config in hf_configs(adapter.model):
                restore.append((config, "_attn_implementation", config._attn_implementation))
                config._attn_implementation = "eager"
            for index, block in enumerate(adapter.blocks):
                for module in block.modules():
                    if type(module).__name__.endswith("Attention"):
                        handles.append(module.register_forward_hook(_hf_hook(maps, index)))
        else:
            raise UnsupportedModelError(f"attention capture is not available for {type(adapter).__name__}")
        yield maps
    finally:
        for h in handles:
            h.remove()
        for obj, attr, value in reversed(restore):
            setattr(obj, attr, value)


def hf_configs(model: torch.nn.Module) -> list:
    """The distinct config objects of a Hugging Face model and its submodules (they select attention)."""
    return list({id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values())


def _hf_hook(maps: AttentionMaps, index: int):
    def hook(module, args, out):
        if isinstance(out, tuple) and len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].dim() == 4:
            maps.record(index, out[1])

    return hook
