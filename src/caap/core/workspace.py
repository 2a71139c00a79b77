"""Scratch buffers reused across the chunks of one CAAP call.

On the CPU, a fresh multi-megabyte tensor per operation is memory the allocator maps from the operating
system and faults in page by page; for a narrow model such as DeiT-Tiny that cost rivals the matrix products.
The engine hands a :class:`Workspace` to the adapter's in-place block path, which writes its large
intermediates (``qkv``, MLP hidden) into these buffers instead, and, under autocast, takes each weight
converted to the low precision once per call.
"""

from __future__ import annotations

import math

import torch


class Workspace:
    """Named flat buffers, grown on demand; ``get`` returns a view of the first ``prod(shape)`` elements.

    A view stays valid until the next ``get`` of the same name: callers use each buffer within one block.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._casts: dict[tuple[int, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype | None = None
            ) -> torch.Tensor:
        """An uninitialised ``shape`` tensor on ``like``'s device, of ``dtype`` (default: ``like``'s)."""
        numel, dtype = math.prod(shape), dtype or like.dtype
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != like.device:
            buf = torch.empty(numel, dtype=dtype, device=like.device)
            self._buffers[name] = buf
        return buf[:numel].view(shape)

    def cast(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``tensor`` in ``dtype``, converted once per workspace (for weights, which do not change in a call)."""
        if tensor.dtype == dtype:
            return tensor
        key = (id(tensor), dtype)
        if key not in self._casts:
            self._casts[key] = (tensor, tensor.to(dtype))  # keeps ``tensor`` alive: its id stays its own
        return self._casts[key][1]
