"""Scratch buffers reused across the chunks of one CAAP call.

On the CPU, a fresh multi-megabyte tensor per operation is memory the allocator maps from the operating
system and faults in page by page; for a narrow model such as DeiT-Tiny that cost rivals the matrix products.
The engine hands a :class:`Workspace` to the adapter's in-place block path, which writes its large
intermediates (``qkv``, MLP hidden) into these buffers instead.
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

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised ``shape`` tensor with ``like``'s dtype and device."""
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
        return buf[:numel].view(shape)
