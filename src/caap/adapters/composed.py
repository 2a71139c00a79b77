"""An adapter made of another adapter and something after its head: open_clip's timm-backed towers (a timm ViT
trunk and a projection head) and zero-shot classifiers (an image tower and text prompts). Embed, blocks and
geometry are the inner adapter's; the head is ``after(inner.head(z))``; the inner adapter's capabilities that do
not depend on the head (attention capture, block views, speed paths) carry over, the linear rules do not."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from caap.adapters.base import Adapter
from caap.adapters.capabilities import AttentionCapture, BlockViews, FastPaths
from caap.adapters.card import ModelCard
from caap.core.contexts import Normalization

CARRIED = (AttentionCapture, BlockViews, FastPaths)


class Composed(Adapter):
    """``inner`` followed by ``after`` (see the module docstring); ``model`` is the whole module."""

    def __init__(self, inner: Adapter, model: nn.Module, after: Callable[[torch.Tensor], torch.Tensor],
                 card: ModelCard, normalization: Normalization | None = None) -> None:
        self.inner, self.model, self._after, self._card = inner, model, after, card
        self.num_prefix = inner.num_prefix
        self.normalization = normalization or inner.normalization
        self.head_rows = inner.head_rows
        self.tokens, self.token_subsets = inner.tokens, inner.token_subsets

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.inner.blocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner.embed(images)

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return self.inner.run_block(index, z, grid)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self._after(self.inner.head(z))

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        return self.inner.grid(input_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.inner.patch_size

    def _read_card(self) -> ModelCard:
        return self._card

    def head_modules(self) -> list[nn.Module]:
        return self.inner.head_modules()

    def unsupported(self, capability: str):
        return self.inner.unsupported(capability)

    # delegated capabilities (declared only when the inner adapter has them: :func:`composed`)
    def capture_attention(self):
        return self.inner.capture_attention()

    def block_view(self, index: int):
        return self.inner.block_view(index)

    def run_block_rows(self, index: int, z: torch.Tensor, rows: int):
        return self.inner.run_block_rows(index, z, rows)

    def run_block_inplace(self, index: int, z: torch.Tensor, workspace):
        return self.inner.run_block_inplace(index, z, workspace)


def composed(inner: Adapter, model: nn.Module, after: Callable[[torch.Tensor], torch.Tensor], card: ModelCard,
             normalization: Normalization | None = None) -> Composed:
    """A :class:`Composed` adapter that declares the capabilities of ``inner`` it can carry."""
    carried = tuple(c for c in CARRIED if isinstance(inner, c))
    cls = type(f"Composed{''.join(c.__name__ for c in carried)}", (Composed, *carried), {})
    return cls(inner, model, after, card, normalization)
