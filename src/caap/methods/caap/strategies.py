"""How a CAAP map is computed: a strategy turns the unpatched runs into each patch group's effect.

A :class:`Strategy` answers one question — the effect of patching each group, ``s(patched base run)[c] −
s(base run)[c]`` — for the variants of a call (:class:`~caap.core.groups.Variants`), for the target class and
optionally for a list of classes. :class:`~caap.methods.caap.exact.Exact` runs one patched forward per
group, :class:`~caap.methods.caap.fast.Fast` takes the other tokens to first order, and the refiners of
:mod:`caap.methods.caap.refine` combine strategies. The **direction** (docs/METHOD.md, Directions) is a
parameter of every strategy, implemented once here:

- ``denoise`` (the paper's CAAP): patch the source's stream into the context run, ``A = s(patched) − s(context)``;
- ``noise``: patch the context's stream into the source run, ``A = s(source) − s(patched)`` — the same effect
  computed on the swapped runs (:meth:`~caap.methods.caap.runs.Runs.swapped`), negated;
- ``both``: ``(denoise + noise) / 2``, the two-point estimate of each group's Shapley value over the coalitions
  of patched tokens (the empty and the full one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, final

import torch

from caap.core.groups import Variants
from caap.errors import CaapError
from caap.methods.base import Maps
from caap.methods.caap.runs import Runs, Setting


class Direction(str, Enum):
    """Which way activations are patched (module docstring)."""

    DENOISE = "denoise"
    NOISE = "noise"
    BOTH = "both"

    @classmethod
    def parse(cls, value: str | Direction) -> Direction:
        try:
            return cls(value)
        except ValueError:
            raise CaapError(f"direction must be one of {[d.value for d in cls]}, got {value!r}") from None

    def band(self, num_blocks: int) -> list[int]:
        """The default patched blocks of this direction for a model of ``num_blocks`` blocks (:data:`DEFAULTS`:
        ``range(a·L//6, b·L//6)``; denoise: the middle third ``range(L//3, 2L//3)``; never empty)."""
        a, b = DEFAULTS[self][0]
        return list(range(a * num_blocks // 6, b * num_blocks // 6)) or [num_blocks // 2]

    @property
    def context(self) -> str:
        """The default context of this direction (:data:`DEFAULTS`)."""
        return DEFAULTS[self][1]

    @property
    def denoises(self) -> bool:
        return self in (Direction.DENOISE, Direction.BOTH)

    @property
    def noises(self) -> bool:
        return self in (Direction.NOISE, Direction.BOTH)


# Each direction's defaults where neither the call nor the model's card gives them: the band in sixths of the depth
# ``(a, b)`` → blocks ``a·L//6 .. b·L//6 − 1``, and the context. Chosen by the sweep of every direction × band ×
# context on the even dev positions of the real DeiT-Tiny (benchmarks/directions.py, docs/DIRECTIONS.md): noising
# wants an earlier band (2:6 of 12), the symmetric mean the middle one with the blurred context; denoise stays the
# paper's CAAP (the middle third, the mean context) whatever the sweep says.
DEFAULTS: dict[Direction, tuple[tuple[int, int], str]] = {
    Direction.DENOISE: ((2, 4), "mean"), Direction.NOISE: ((1, 3), "mean"), Direction.BOTH: ((2, 4), "blur")}


@dataclass
class Effects:
    """The effect of every variant: ``target`` ``[V]`` (its image's target class), ``classes`` ``[V, K']`` for the
    requested classes (None when none were asked for), ``base_scores`` ``[B, K]`` (the unpatched base run's
    scores, for the call's metadata) and per-call ``meta``."""

    target: torch.Tensor
    classes: torch.Tensor | None
    base_scores: torch.Tensor | None
    meta: dict[str, Any] = field(default_factory=dict)

    def scaled(self, factor: float) -> Effects:
        return Effects(self.target * factor, None if self.classes is None else self.classes * factor,
                       self.base_scores, self.meta)


def average(parts: list[Effects]) -> Effects:
    """The mean of the directions' effects (the metadata counts the runs of both)."""
    if len(parts) == 1:
        return parts[0]
    meta = dict(parts[0].meta)
    for key, value in parts[1].meta.items():
        if isinstance(value, int) and key in meta and key.endswith(("runs", "passes", "variants")):
            meta[key] = meta[key] + value
    classes = None if parts[0].classes is None else sum(p.classes for p in parts) / len(parts)
    return Effects(sum(p.target for p in parts) / len(parts), classes, parts[0].base_scores, meta)


class Strategy(ABC):
    """Base class: computes the effects of a call's variants in its :attr:`direction`.

    Subclasses implement :meth:`_patched` for the denoising orientation of the runs they are given, and say what
    they need of the unpatched runs: :attr:`uses_base_scores` (the base run's scores from the call's forward;
    False for a strategy that runs the base itself)."""

    name: ClassVar[str] = ""
    uses_base_scores: ClassVar[bool] = True

    def __init__(self, direction: str | Direction = Direction.DENOISE) -> None:
        self.direction = Direction.parse(direction)

    def check(self, setting: Setting) -> None:  # noqa: B027 - a hook: most strategies run on any model
        """Refuse, at construction, a model this strategy cannot run on (default: any model)."""

    def needs(self) -> tuple[bool, bool]:
        """``(context_stream, context_scores)``: what the call's forward must keep of the context run."""
        return self.direction.noises, self.direction.denoises and self.uses_base_scores

    def settings(self) -> dict[str, Any]:
        return {"strategy": self.name, "direction": self.direction.value}

    @final
    def effects(self, setting: Setting, runs: Runs, variants: Variants, target: torch.Tensor,
                classes: torch.Tensor | None, progress: bool = False) -> Effects:
        """Each variant's effect in this strategy's direction (module docstring); ``runs`` in the denoising
        orientation (base = context, donor = source), ``classes``: int64 ``[K']`` or None."""
        parts = []
        if self.direction.denoises:
            parts.append(self._patched(setting, runs, variants, target, classes, progress))
        if self.direction.noises:
            parts.append(self._patched(setting, runs.swapped(), variants, target, classes, progress).scaled(-1.0))
        return average(parts)

    @final
    def maps(self, setting: Setting, runs: Runs, groups: torch.Tensor, target: torch.Tensor,
             classes: torch.Tensor | None, progress: bool = False) -> Maps:
        """Maps ``[B, gh, gw]`` (and ``[B, K', gh, gw]`` for ``classes``) of the group map ``groups``
        ``[B, gh, gw]``: each patch gets its group's effect; patches of a negative group id are NaN."""
        variants = Variants.from_groups(groups, setting.adapter.num_prefix)
        found = self.effects(setting, runs, variants, target, classes, progress)
        scores, class_scores = scatter_to_grid(found.target, found.classes, variants, groups.shape[0],
                                       tuple(groups.shape[1:]))
        return Maps(scores, class_scores, found.meta)

    @abstractmethod
    def _patched(self, setting: Setting, runs: Runs, variants: Variants, target: torch.Tensor,
                 classes: torch.Tensor | None, progress: bool) -> Effects:
        """``s(base run with each variant's tokens from the donor)[c] − s(base run)[c]`` per variant."""

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "strategy")
        return f"{type(self).__name__}({options})"


def scatter_to_grid(out: torch.Tensor, out_cls: torch.Tensor | None, variants: Variants, batch: int,
            grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-variant effects ``[V]`` (and ``[V, K']``) as maps ``[B, gh, gw]`` (and ``[B, K', gh, gw]``); patches that
    no variant patched are NaN."""
    gh, gw = grid
    pv = variants.patch_variant.to(out.device)  # [B, gh*gw], -1 where a patch is not patched
    skipped = pv < 0
    scores = out[pv.clamp(min=0)].masked_fill(skipped, float("nan")).view(batch, gh, gw).float().cpu()
    class_scores = None
    if out_cls is not None:
        picked = out_cls[pv.clamp(min=0)].masked_fill(skipped[..., None], float("nan"))  # [B, gh*gw, K']
        class_scores = picked.permute(0, 2, 1).reshape(batch, -1, gh, gw).float().cpu()  # [B, K', gh, gw]
    return scores, class_scores
