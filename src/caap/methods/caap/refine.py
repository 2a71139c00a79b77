"""Refiners: an approximate map first, exact CAAP only where it matters. Each takes strategies, not the
explainer, and answers the same :meth:`maps` call as a strategy (a wrapper, as Captum's ``NoiseTunnel``).

- :class:`CoarseToFine`: exact scores of ``coarse × coarse`` superpatches, then exact single patches inside the
  top ``fraction`` of them (the ``caap:refine=F`` option).
- :class:`FastThenExact`: the fast map of every patch, then exact single-patch runs for the top ``fraction`` of
  the patches by it (the ``caap_adaptive`` method; docs/FAST.md compares the two).

The refined patches are chosen per image from the target's map; the other classes' maps (``classes``) take the
same patches. A refiner chooses its own patch groups: the group map it is given only says the grid (the
explainer refuses a user's group map with a refiner, at construction or call).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from caap.core.groups import superpatch_groups
from caap.errors import CaapError
from caap.methods.base import Maps
from caap.methods.caap.exact import Exact
from caap.methods.caap.fast import Fast
from caap.methods.caap.runs import Runs, Setting


def _fraction(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise CaapError(f"refine must be a fraction in (0, 1] of the map to refine, got {value!r}")
    return float(value)


class Refiner:
    """Base: the strategies it combines must patch in the same direction."""

    name = ""

    def __init__(self, *parts, fraction: float) -> None:
        directions = {p.direction for p in parts}
        if len(directions) != 1:
            raise CaapError(f"{type(self).__name__} combines strategies of one direction, got "
                            f"{sorted(d.value for d in directions)}")
        self.parts, self.fraction = parts, _fraction(fraction)
        self.direction = parts[0].direction

    def check(self, setting: Setting) -> None:
        for part in self.parts:
            part.check(setting)

    def needs(self) -> tuple[bool, bool]:
        wanted = [p.needs() for p in self.parts]
        return any(w[0] for w in wanted), any(w[1] for w in wanted)

    def settings(self) -> dict[str, Any]:
        inner = {}
        for part in self.parts:
            inner.update({k: v for k, v in part.settings().items() if k != "strategy"})
        return {**inner, "strategy": self.name, "refine": self.fraction}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.parts))}, fraction={self.fraction})"


class CoarseToFine(Refiner):
    """Exact superpatches of ``coarse × coarse`` patches first (edge ones may be smaller), then exact single
    patches inside the top ``fraction`` of superpatches (by their best patch); the others get their
    superpatch's effect divided by its size."""

    name = "coarse_to_fine"

    def __init__(self, exact: Exact | None = None, fraction: float = 0.08, coarse: int = 2) -> None:
        exact = exact if exact is not None else Exact()
        if not isinstance(exact, Exact):
            raise CaapError(f"CoarseToFine refines an Exact strategy, got {type(exact).__name__}")
        super().__init__(exact, fraction=fraction)
        if isinstance(coarse, bool) or not isinstance(coarse, int) or coarse < 2:
            raise CaapError(f"coarse must be an int >= 2 (superpatch side in patches), got {coarse!r}")
        self.exact, self.coarse = exact, coarse

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "coarse": self.coarse}

    def maps(self, setting: Setting, runs: Runs, groups: torch.Tensor, target: torch.Tensor,
             classes: torch.Tensor | None, progress: bool = False) -> Maps:
        batch, gh, gw = groups.shape
        coarse = superpatch_groups((gh, gw), self.coarse).expand(batch, gh, gw)  # [B, gh, gw]
        first = self.exact.maps(setting, runs, coarse, target, classes, progress)
        flat = coarse.reshape(batch, -1)  # [B, P]
        n_groups = int(flat.max()) + 1
        size = torch.zeros(batch, n_groups).scatter_add_(1, flat, torch.ones(flat.shape))  # [B, G] patches per group
        group_score = torch.zeros(batch, n_groups).scatter_reduce_(1, flat, first.scores.reshape(batch, -1), "amax",
                                                                   include_self=False)  # [B, G]
        k = max(1, math.ceil(self.fraction * n_groups))
        chosen = torch.zeros(batch, n_groups, dtype=torch.bool)
        chosen.scatter_(1, group_score.topk(k, dim=1).indices, True)
        refine_patch = chosen.gather(1, flat)  # [B, P] patch lies in a chosen group
        fine = torch.where(refine_patch, torch.arange(gh * gw).expand(batch, -1), -1).view(batch, gh, gw)
        second = self.exact.maps(setting, runs, fine, target, classes, progress)
        share = size.gather(1, flat).view(batch, gh, gw)  # [B, gh, gw] size of each patch's group
        refined = refine_patch.view(batch, gh, gw)
        scores = torch.where(refined, second.scores, first.scores / share)
        class_scores = None
        if classes is not None:
            class_scores = torch.where(refined[:, None], second.class_scores, first.class_scores / share[:, None])
        meta = {**second.meta, "patched_runs": first.meta["patched_runs"] + second.meta["patched_runs"],
                "refined_patches": int(refine_patch.sum())}
        return Maps(scores, class_scores, meta)


class FastThenExact(Refiner):
    """The fast map of every patch, then exact single-patch runs for each image's top ``fraction`` of patches by
    it; the rest keeps the fast map."""

    name = "fast_then_exact"

    def __init__(self, fast: Fast | None = None, exact: Exact | None = None, fraction: float = 0.08) -> None:
        fast, exact = fast if fast is not None else Fast(), exact if exact is not None else Exact()
        if not isinstance(fast, Fast) or not isinstance(exact, Exact):
            raise CaapError(f"FastThenExact takes a Fast and an Exact strategy, got {type(fast).__name__} and "
                            f"{type(exact).__name__}")
        super().__init__(fast, exact, fraction=fraction)
        self.fast, self.exact = fast, exact

    def maps(self, setting: Setting, runs: Runs, groups: torch.Tensor, target: torch.Tensor,
             classes: torch.Tensor | None, progress: bool = False) -> Maps:
        batch, gh, gw = groups.shape
        every = torch.arange(gh * gw).view(1, gh, gw).expand(batch, gh, gw)
        fast = self.fast.maps(setting, runs, every, target, classes, progress)
        k = max(1, math.ceil(self.fraction * gh * gw))
        flat = fast.scores.reshape(batch, -1)  # [B, P]
        chosen = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1).indices, True)  # [B, P]
        fine = torch.where(chosen, torch.arange(gh * gw).expand(batch, -1), -1).view(batch, gh, gw)
        exact = self.exact.maps(setting, runs, fine, target, classes, progress)
        refined = chosen.view(batch, gh, gw)
        scores = torch.where(refined, exact.scores, fast.scores)
        class_scores = None
        if classes is not None:
            class_scores = torch.where(refined[:, None], exact.class_scores, fast.class_scores)
        return Maps(scores, class_scores, {**fast.meta, "patched_runs": exact.meta["patched_runs"],
                                           "refined_patches": int(chosen.sum())})

