"""The unpatched runs of a CAAP call, as a typed result: what every strategy builds on.

A :class:`Side` is one unpatched run of the model — on the source images or on their contexts — kept at the
patched blocks: the residual stream entering each patched block (``z_l``, docs/METHOD.md) and the run's scores.
:class:`Runs` holds both sides. Denoising patches the source's stream into the context run; noising is the
same operation with the roles swapped (:meth:`Runs.swapped`), so every strategy serves both directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from caap.adapters import Adapter
from caap.core.scores import ScoreFn, apply_score
from caap.core.state import autocast
from caap.errors import CaapError


@dataclass(frozen=True)
class Setting:
    """What a CAAP call is configured with, for the strategies: the model's adapter, the patched blocks
    (sorted, 0-based), the score, the autocast dtype (None: float32), the device and the patch grid of the
    call's images (None before a call: the blocks' per-call fact, :meth:`Adapter.run_block`)."""

    adapter: Adapter
    layers: tuple[int, ...]
    score_fn: ScoreFn
    dtype: torch.dtype | None
    device: torch.device
    grid: tuple[int, int] | None = None

    @property
    def first(self) -> int:
        """The first patched block: every run before it is shared by all patched variants."""
        return self.layers[0]


@dataclass(frozen=True)
class Side:
    """One unpatched run: ``stream`` ``{l: [B, N, D]}``, the residual stream entering each patched block ``l``
    (the first one is the prefix every patched variant starts from), and ``scores`` ``[B, K]`` — ``None`` where
    the call's strategy runs this side's remainder itself (the fast mode, with its gradients)."""

    stream: dict[int, torch.Tensor]
    scores: torch.Tensor | None

    def prefix(self, first: int) -> torch.Tensor:
        """The residual stream entering block ``first``, ``[B, N, D]``."""
        return self.stream[first]


@dataclass(frozen=True)
class Runs:
    """The source and context runs of a call. ``base`` is the run that gets patched (the context, when
    denoising), ``donor`` the run whose stream is copied in (the source)."""

    base: Side
    donor: Side

    def swapped(self) -> Runs:
        """The noising direction: the source run is patched with the context's stream."""
        return Runs(base=self.donor, donor=self.base)


def forward_runs(setting: Setting, images: torch.Tensor, contexts: torch.Tensor, context_stream: bool,
                 context_scores: bool) -> tuple[Side, Side]:
    """``(source, context)`` sides of ``images`` ``[B, 3, H, W]`` and their ``contexts``.

    The source runs in full (its scores resolve the target). The context runs to the first patched block, and
    further only as asked: through every patched block (``context_stream``: the noising direction copies it
    in) and to its scores (``context_scores``)."""
    adapter, layers = setting.adapter, setting.layers
    with autocast(setting.device, setting.dtype):
        z, grid = adapter.embed(images), adapter.grid((images.shape[2], images.shape[3]))  # [B, N, D]
        expected = adapter.num_prefix + _patches(adapter, images)
        if z.shape[1] != expected:
            raise CaapError(f"embed gave {z.shape[1]} tokens, expected {adapter.num_prefix} prefix + "
                            f"{expected - adapter.num_prefix} patches")
        stream: dict[int, torch.Tensor] = {}
        for index in range(adapter.num_blocks):
            if index in layers:
                stream[index] = z
            z = adapter.run_block(index, z, grid)
        source = Side(stream, apply_score(setting.score_fn, adapter.head(z)))  # [B, K]

        c = adapter.embed(contexts)
        stop = adapter.num_blocks if context_scores else (layers[-1] + 1 if context_stream else setting.first)
        kept: dict[int, torch.Tensor] = {}
        for index in range(stop):
            if index == setting.first or (context_stream and index in layers):
                kept[index] = c
            c = adapter.run_block(index, c, grid)
        if stop == setting.first:
            kept[setting.first] = c
        scores = apply_score(setting.score_fn, adapter.head(c)) if context_scores else None
    return source, Side(kept, scores)


def _patches(adapter: Adapter, images: torch.Tensor) -> int:
    gh, gw = adapter.grid((images.shape[2], images.shape[3]))
    return gh * gw
