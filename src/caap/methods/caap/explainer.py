"""CAAP as an explainer: the options of a call, the unpatched runs, and a strategy that turns them into maps.

Three registry names are three presets of one class, each taking only the options its strategy uses:

- ``caap``: :class:`~caap.methods.caap.exact.Exact` (one patched run per group); ``refine=F`` wraps it in
  :class:`~caap.methods.caap.refine.CoarseToFine`; in Python any strategy object can be given (``strategy=``);
- ``caap_fast``: :class:`~caap.methods.caap.fast.Fast` (first order in the other tokens; docs/FAST.md);
- ``caap_adaptive``: :class:`~caap.methods.caap.refine.FastThenExact` (the fast map, its top patches exact).

Every preset takes ``direction`` (``denoise``, the paper's CAAP; ``noise``; ``both``; docs/METHOD.md, Directions).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from caap.adapters import Adapter
from caap.core.contexts import Context, make_context
from caap.core.groups import check_groups
from caap.core.layers import check_layers
from caap.core.scores import ScoreFn, make_score
from caap.errors import CaapError
from caap.methods.base import Explainer, Forward, Maps, register
from caap.methods.caap.exact import Exact
from caap.methods.caap.fast import Fast
from caap.methods.caap.refine import CoarseToFine, FastThenExact, Refiner
from caap.methods.caap.runs import Runs, Setting, forward_runs
from caap.methods.caap.strategies import Direction, Strategy


class CAAPBase(Explainer):
    """What every CAAP preset shares (docs/METHOD.md).

    Args:
        model: a timm ``VisionTransformer``, a Hugging Face ViT/DeiT/DINOv2 classifier, or a caap adapter.
        layers: 0-based block indices whose *input* is patched, or ``"START:STOP"`` (default: the band in the
            model's card, ``adapter.card.defaults["layers"]``, when it carries one, else the direction's band,
            :meth:`Direction.band`: for ``denoise`` the middle third ``range(L//3, 2L//3)``, docs/RESULTS.md;
            for ``noise`` ``range(L//6, L//2)``, docs/DIRECTIONS.md).
        context: ``"mean"``, ``"black"``, ``"blur"`` / ``"blur:SIGMA"``, ``"noise"`` / ``"noise:STD:SEED"``,
            a tensor ``[3, H, W]`` / ``[B, 3, H, W]`` (normalised) or a :class:`caap.core.contexts.Context`
            (default: the direction's, :attr:`Direction.context`: ``"mean"``, for ``both`` ``"blur"``).
        score: ``"logit"``, ``"prob"``, ``"logprob"`` or a callable ``logits [N, C] -> scores [N, K]``.

    Each preset sets ``self.strategy`` (a :class:`Strategy` or :class:`Refiner`: how the maps are computed) from
    its own options before calling this constructor.

    ``device``, ``dtype`` and ``normalization`` are shared by every method (:class:`~caap.methods.Explainer`).
    A call's options: ``groups`` (an integer map ``[gh, gw]`` or ``[B, gh, gw]``: patches of a group are patched
    in one run and share its score; negative ids are not patched, their score is NaN), ``classes`` (the maps of
    these classes too, ``class_scores`` ``[B, K', gh, gw]``; cost per class in the fast mode, none in the exact
    one) and ``all_classes`` (every class).
    """

    resolution = "patch"
    call_options = frozenset({"all_classes", "classes", "groups"})

    strategy: Strategy | Refiner

    def __init__(self, model: nn.Module | Adapter, layers: str | Iterable[int] | None = None,
                 context: str | torch.Tensor | Context | None = None, score: str | ScoreFn = "logit",
                 groups: torch.Tensor | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        strategy = getattr(self, "strategy", None)
        if not isinstance(strategy, (Strategy, Refiner)):
            raise CaapError(f"strategy must be a caap Strategy or Refiner (Exact(), Fast(), CoarseToFine(), "
                            f"FastThenExact()), got {type(strategy).__name__}")
        if groups is not None and isinstance(strategy, Refiner):
            raise CaapError(f"groups and refine: {type(strategy).__name__} chooses its own patch groups; give one")
        if layers is None:
            layers = self.adapter.card.defaults.get("layers") or strategy.direction.band(self.adapter.num_blocks)
        self.layers = check_layers(layers, self.adapter.num_blocks)
        self.context = make_context(strategy.direction.context if context is None else context)
        self.score_name, self.score_fn = make_score(score)
        self.groups = groups
        strategy.check(self.run_setting)

    @property
    def run_setting(self) -> Setting:
        return Setting(self.adapter, tuple(self.layers), self.score_fn, self.dtype, self.device)

    @property
    def direction(self) -> Direction:
        return self.strategy.direction

    def describe(self) -> str:
        band = f"{self.layers[0]}:{self.layers[-1] + 1}" if self.layers == list(
            range(self.layers[0], self.layers[-1] + 1)) else str(self.layers)
        direction = "" if self.direction == Direction.DENOISE else f", {self.direction.value}"
        return f"CAAP ({self.strategy.name}{direction}), layers {band}"

    def unit(self) -> str:
        return f"Δ {self.score_name}"

    def settings(self) -> dict:
        """JSON-friendly description of the configuration."""
        return {**super().settings(), "layers": self.layers, "context": self.context.describe(),
                "score": self.score_name, **self.strategy.settings()}

    def _forward(self, images: torch.Tensor) -> Forward:
        """The source and context runs of ``images`` ``[B, 3, H, W]`` that every patched run builds on; the source
        run's scores resolve the target."""
        stream, scores = self.strategy.needs()
        with torch.inference_mode():
            contexts = self.context(images, self.adapter.normalization)  # [B, 3, H, W]
            source, context = forward_runs(self.run_setting, images, contexts, stream, scores)
        return Forward(source.scores, Runs(base=context, donor=source))

    @torch.inference_mode()
    def _attribute(self, images: torch.Tensor, target: torch.Tensor, *, grid: tuple[int, int], forward: Forward,
                   all_classes: bool = False, classes: Sequence[int] | torch.Tensor | None = None,
                   groups: torch.Tensor | None = None) -> Maps:
        """Maps ``[B, gh, gw]`` in score units, signed, and ``class_scores`` ``[B, K', gh, gw]`` for the classes
        asked for."""
        runs: Runs = forward.cache
        wanted = self._classes(all_classes, classes, forward.scores.shape[1])
        if groups is not None and isinstance(self.strategy, Refiner):
            raise CaapError(f"groups and refine: {type(self.strategy).__name__} chooses its own patch groups")
        resolved = check_groups(self.groups if groups is None else groups, images.shape[0], grid)
        setting = replace(self.run_setting, grid=tuple(grid))
        maps = self.strategy.maps(setting, runs, resolved, target, wanted, self._progress)
        meta = {**maps.meta, **self._run_scores(runs, target)}
        if classes is not None:
            meta["classes"] = wanted.tolist()
        return Maps(maps.scores, maps.class_scores, meta)

    @staticmethod
    def _classes(all_classes: bool, classes, count: int) -> torch.Tensor | None:
        if not isinstance(all_classes, bool):
            raise CaapError(f"all_classes must be True or False, got {all_classes!r}")
        if all_classes and classes is not None:
            raise CaapError("all_classes and classes: give one (all_classes=True is every class)")
        if all_classes:
            return torch.arange(count)
        if classes is None:
            return None
        try:
            wanted = torch.as_tensor(classes).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise CaapError(f"classes must be a list of class indices, got {classes!r}") from None
        if wanted.is_floating_point() or wanted.dtype == torch.bool or not len(wanted):
            raise CaapError(f"classes must be a non-empty list of class indices, got {classes!r}")
        bad = (wanted < 0) | (wanted >= count)
        if bool(bad.any()):
            raise CaapError(f"class {int(wanted[bad][0])} is out of range; expected class indices in 0..{count - 1}")
        return wanted.to(torch.int64)

    @staticmethod
    def _run_scores(runs: Runs, target: torch.Tensor) -> dict:
        out = {}
        for key, side in (("context_score", runs.base), ("source_score", runs.donor)):
            if side.scores is not None:
                out[key] = side.scores.gather(1, target.to(side.scores.device)[:, None])[:, 0].float().cpu()
        return out


@register
class CAAP(CAAPBase):
    """Causal Attribution via Activation Patching, exact (see :class:`CAAPBase` for the shared options).

    Args:
        direction: ``"denoise"`` (default, the paper), ``"noise"`` or ``"both"``.
        batch_size: patched runs per forward chunk (default: from a memory budget).
        compile: run the patched blocks through ``torch.compile`` (docs/PERFORMANCE.md).
        refine: coarse-to-fine (approximate): exact ``coarse × coarse`` superpatches first, then single patches
            inside the top ``refine`` fraction of superpatches (the others get their superpatch's score over its
            size). ``None``: every patch exact.
        coarse: the superpatch side for ``refine``.
        strategy: any :class:`Strategy` or :class:`Refiner` instead of the options above (Python only).
        groups: a group map for every call (see :class:`CAAPBase`).
    """

    name = "caap"

    def __init__(self, model: nn.Module | Adapter, layers: str | Iterable[int] | None = None,
                 context: str | torch.Tensor | Context | None = None, score: str | ScoreFn = "logit",
                 groups: torch.Tensor | None = None, direction: str = "denoise", batch_size: int | None = None,
                 compile: bool = False, refine: float | None = None, coarse: int | None = None,
                 strategy: Strategy | Refiner | None = None, **kwargs: Any) -> None:
        given = {k for k, v in (("direction", direction != "denoise"), ("batch_size", batch_size is not None),
                                ("compile", compile is not False), ("refine", refine is not None),
                                ("coarse", coarse is not None)) if v}
        if strategy is not None and given:
            raise CaapError(f"strategy and {sorted(given)[0]}: the strategy object carries its own options; give "
                            "one or the other")
        if coarse is not None and refine is None:
            raise CaapError("coarse without refine: the superpatch side only applies to coarse-to-fine refinement")
        if strategy is None:
            strategy = Exact(direction, batch_size, compile)
            if refine is not None:
                strategy = CoarseToFine(strategy, refine, 2 if coarse is None else coarse)
        self.strategy = strategy
        super().__init__(model, layers, context, score, groups, **kwargs)


@register
class FastCAAP(CAAPBase):
    """Fast CAAP: each patch group's own tokens exact, the other tokens to first order (docs/FAST.md): about
    four forward passes per image. ``direction`` as for ``caap``; ``classes`` cost one backward pass each."""

    name = "caap_fast"

    def __init__(self, model: nn.Module | Adapter, layers: str | Iterable[int] | None = None,
                 context: str | torch.Tensor | Context | None = None, score: str | ScoreFn = "logit",
                 groups: torch.Tensor | None = None, direction: str = "denoise", **kwargs: Any) -> None:
        self.strategy = Fast(direction)
        super().__init__(model, layers, context, score, groups, **kwargs)


@register
class AdaptiveCAAP(CAAPBase):
    """The fast map, then exact CAAP for its top ``refine`` fraction of patches (:class:`FastThenExact`).

    On a 14×14 grid: the fast mode's ~4 forward passes, then 16 exact patched runs instead of 196. The top 8 %
    of the map is exact; the rest is the fast map. It beats coarse-to-fine (``caap:refine=0.08``) in rank
    agreement with exact CAAP, in deletion and insertion and in time on the dev images (docs/FAST.md).
    """

    name = "caap_adaptive"

    def __init__(self, model: nn.Module | Adapter, layers: str | Iterable[int] | None = None,
                 context: str | torch.Tensor | Context | None = None, score: str | ScoreFn = "logit",
                 direction: str = "denoise", refine: float = 0.08, batch_size: int | None = None,
                 compile: bool = False, **kwargs: Any) -> None:
        self.strategy = FastThenExact(Fast(direction), Exact(direction, batch_size, compile), refine)
        super().__init__(model, layers, context, score, **kwargs)
