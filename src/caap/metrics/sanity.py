"""Model-randomisation sanity check (Adebayo et al. 2018), cascading from the head down."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

from caap.adapters import adapt
from caap.errors import CaapError
from caap.metrics.base import Metric, register

ExplainFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row pair of ``[B, n]`` tensors (ties ranked by position), ``[B]``."""
    def ranks(x: torch.Tensor) -> torch.Tensor:
        return torch.argsort(torch.argsort(x, dim=1, stable=True), dim=1).float()

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp(min=1e-12)


@register
class Randomization(Metric):
    """Rank correlation between the maps of the trained model and of copies whose head and last ``k`` blocks
    are re-drawn (each tensor from a Gaussian with its own mean and std, seeded), for every ``k`` in
    ``levels``. The score is the mean correlation over the levels: a map that ignores the weights stays near
    1; lower is better. ``curve`` gives every level.

    Args:
        explain: the method that made the maps, as ``explain(model, images, targets) -> maps [B, h, w]``
            (the caller builds it: ``lambda m, x, t: caap.methods.build("caap", m).explain(x, t).scores``).
            The benchmark runner binds it per method with :meth:`bind`.
        levels: numbers of blocks randomised besides the head (default: 0 … L).
        seed: seed of the re-drawn weights.
    """

    name = "randomization"
    higher_is_better = False
    needs_model = True
    needs_explain = True

    def __init__(self, explain: ExplainFn | None = None, levels=None, seed: int = 0) -> None:
        if explain is not None and not callable(explain):
            raise CaapError(f"explain must be a function (model, images, targets) -> maps, got {explain!r}")
        self.explain = explain
        if isinstance(levels, str):  # the spec grammar's "0,2,4"
            levels = [k.strip() for k in levels.split(",") if k.strip()]
        elif isinstance(levels, int) and not isinstance(levels, bool):
            levels = [levels]
        try:
            self.levels = None if levels is None else [int(k) for k in levels]
        except (TypeError, ValueError):
            raise CaapError(f"levels must be numbers of blocks (e.g. 0,2,4), got {levels!r}") from None
        self.seed = int(seed)

    def bind(self, explain: ExplainFn) -> Randomization:
        """A copy of this metric that re-explains with ``explain``."""
        return Randomization(explain, self.levels, self.seed)

    def randomized(self, model, blocks: int):
        """A deep copy of ``model`` with the head and the last ``blocks`` blocks re-drawn (the model is untouched)."""
        adapter = adapt(model)
        if not 0 <= blocks <= adapter.num_blocks:
            raise CaapError(f"cannot randomise {blocks} blocks of a model with {adapter.num_blocks}")
        clone = copy.deepcopy(adapter.model)
        twin = adapt(clone)
        gen = torch.Generator().manual_seed(self.seed)
        modules = twin.head_modules() + list(twin.blocks)[twin.num_blocks - blocks :]
        with torch.no_grad():
            for module in modules:
                for p in module.parameters():
                    mean, std = p.float().mean(), p.float().std() if p.numel() > 1 else p.new_tensor(0.02)
                    p.copy_((torch.randn(p.shape, generator=gen) * std + mean).to(p))
        return clone

    def curve(self, model, images, targets, maps) -> torch.Tensor:
        """Correlations ``[B, len(levels)]``."""
        if self.explain is None:
            raise CaapError("randomization needs the method that made the maps: "
                            "Randomization(explain=lambda model, images, targets: maps)")
        n = adapt(model).num_blocks
        levels = self.levels if self.levels is not None else list(range(n + 1))
        out = []
        for k in levels:
            other = self.explain(self.randomized(model, k), images, targets)
            out.append(spearman(maps.flatten(1), torch.as_tensor(other).flatten(1)))
        return torch.stack(out, 1)

    def evaluate(self, model, images, targets, maps, masks):
        return self.curve(model, images, targets, maps).mean(1)


def top_overlap(reference: torch.Tensor, other: torch.Tensor, share: float = 0.1) -> float:
    """The share of ``reference``'s top ``share`` cells that ``other`` also ranks in its top ``share`` (two maps of
    one shape; how well an approximation keeps the cells that matter)."""
    k = math.ceil(share * reference.numel())
    top = set(reference.flatten().topk(k).indices.tolist())
    return len(top & set(other.flatten().topk(k).indices.tolist())) / k
