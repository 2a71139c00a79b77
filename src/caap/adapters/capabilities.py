"""What not every model can do, as capabilities an adapter declares by inheriting them.

The core contract (:class:`caap.adapters.Adapter`) is what every method needs: embed, blocks, head, geometry,
the card. A method that needs more asks with :func:`require`, which returns the adapter as that capability or
raises :class:`~caap.errors.UnsupportedModelError` naming what is missing:

- :class:`AttentionCapture`: every block's attention probabilities (attention methods, GAE, Bi-Attn…);
- :class:`BlockViews`: a pre-norm block as token-wise pieces around its attention (CAAP's fast mode);
- :class:`LinearRules`: blocks and head with their linear layers named, and conservative propagation (LRP,
  transformer attribution, AttnLRP);
- :class:`FastPaths`: optional speed paths of exact CAAP (the last block's rows only, blocks in place);
  an adapter without them runs the blocks as modules.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import TypeVar

import torch

from caap.adapters.attention import AttentionMaps
from caap.adapters.views import BlockView, LinearBlock, LinearHead
from caap.core.workspace import Workspace

T = TypeVar("T")


class AttentionCapture(ABC):
    @abstractmethod
    def capture_attention(self) -> contextlib.AbstractContextManager[AttentionMaps]:
        """Context manager: after a forward inside it, ``maps.get()`` gives every block's attention
        probabilities ``[B, heads, N, N]``; every switch it flips is restored on exit."""


class BlockViews(ABC):
    @abstractmethod
    def block_view(self, index: int) -> BlockView:
        """Block ``index`` as token-wise pieces around its attention (:mod:`caap.adapters.views`); refused (one
        line) for a block whose view would not reproduce the module exactly."""


class LinearRules(ABC):
    @abstractmethod
    def linear_block(self, index: int) -> LinearBlock:
        """Block ``index`` with its linear layers named (:class:`~caap.adapters.views.LinearBlock`)."""

    @abstractmethod
    def linear_head(self) -> LinearHead:
        """The head as norm, pooling, fc norm and one linear classifier (:class:`~caap.adapters.views.LinearHead`)."""

    @abstractmethod
    def conservative(self) -> contextlib.AbstractContextManager[None]:
        """Context manager: attention probabilities and every LayerNorm's ``1/std`` are constants for autograd
        (Ali et al. 2022, conservative propagation); undone on exit."""


class FastPaths:
    def run_block_rows(self, index: int, z: torch.Tensor, rows: int) -> torch.Tensor | None:
        """Rows ``0 .. rows-1`` of ``B_l(z)``, ``[B, N, D] -> [B, rows, D]``, computing attention queries and the
        MLP for those rows only; ``None`` when this block cannot (then the whole block runs). Used for the last
        block when the head reads only prefix rows."""
        return None

    def run_block_inplace(self, index: int, z: torch.Tensor, workspace: Workspace) -> torch.Tensor | None:
        """``B_l(z)`` computed in place: ``z`` ``[B, N, D]`` (contiguous, owned by the caller) becomes the output
        and is returned; large intermediates go to ``workspace``. ``None`` when this block or this state (grad,
        autocast, hooks) has no such path. Equal to ``run_block`` up to float rounding."""
        return None


WHAT = {AttentionCapture: "capture_attention (attention probabilities)",
        BlockViews: "block_view (a pre-norm block as token-wise pieces, for CAAP's fast mode)",
        LinearRules: "linear_block (a pre-norm block's linear layers, for relevance propagation)"}


def require(adapter, capability: type[T]) -> T:
    """``adapter`` as ``capability``, or the adapter's one-line refusal naming the missing capability."""
    if isinstance(adapter, capability):
        return adapter
    raise adapter.unsupported(WHAT.get(capability, capability.__name__))


def fast_paths(adapter) -> FastPaths:
    """The adapter's speed paths, or the plain ones (none) when it has none."""
    return adapter if isinstance(adapter, FastPaths) else _NONE


_NONE = FastPaths()
