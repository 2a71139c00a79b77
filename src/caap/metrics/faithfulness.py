"""Faithfulness: deletion and insertion curves (Petsiuk et al. 2018) on the model's patch grid."""

from __future__ import annotations

import torch

from caap.adapters import adapt
from caap.core.contexts import make_context
from caap.core.scores import apply_score, make_score
from caap.errors import CaapError
from caap.metrics.base import CurveMetric, rank_curve, ranked, register, tie_break, to_grid


class _PatchCurve(CurveMetric):
    """Base: patches ranked by the map (highest first) are removed from the image (deletion) or revealed
    on a canvas (insertion) ``step`` at a time; the target score is read after every step.

    Exactly ``min(k · step, P)`` patches are changed after step ``k``, whatever the map's ties: tied patches are
    taken in a seeded random order (:func:`caap.metrics.base.tie_break`, the same for every method and image),
    not in raster order. Pixel maps are averaged per patch first.

    Args:
        step: patches changed per step (1 = every patch, as fine as the model sees).
        canvas: what removed / not yet inserted patches show: a CAAP context name (``"mean"``: zeros in
            normalised space, ``"black"``, ``"blur[:SIGMA]"``, ``"noise[:STD[:SEED]]"``) or a tensor. Score a
            method on at least two canvases, one of them not the context it was built from (CAAP's default is
            ``mean``): docs/EVALUATION.md.
        score: ``"prob"`` (as the paper), ``"logit"``, ``"logprob"`` or a callable.
        batch_size: composite images per forward.
        seed: the order in which tied patches are taken.
    """

    needs_model = True
    insert: bool = False
    most_relevant_first: bool = True

    def __init__(self, step: int = 1, canvas=None, score="prob", batch_size: int = 32, seed: int = 0) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise CaapError(f"step must be a positive int (patches per step), got {step!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CaapError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CaapError(f"seed must be an int (the order of tied patches), got {seed!r}")
        self.step, self.batch_size, self.seed = step, batch_size, seed
        self.canvas = make_context(canvas if canvas is not None else ("blur" if self.insert else "mean"))
        self.score_name, self.score_fn = make_score(score)

    @torch.inference_mode()
    def curve(self, model, images: torch.Tensor, targets: torch.Tensor,
              maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [B, n_steps + 1], fractions [n_steps + 1])``: the target score after changing the share
        ``fractions[k]`` of the patches (``min(k * step, P) / P``)."""
        adapter = adapt(model)
        grid = adapter.check_input(images)
        gh, gw = grid
        n_patch = gh * gw
        device = next(adapter.model.parameters()).device
        images = images.to(device)
        canvas = self.canvas(images, adapter.normalization)
        order = ranked(to_grid(maps, grid).flatten(1), tie_break(n_patch, self.seed),
                       self.most_relevant_first)  # [B, P]: patch indices, first changed first
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n_patch).expand_as(order))  # rank of every patch, 0 = top
        ph, pw = images.shape[-2] // gh, images.shape[-1] // gw
        rank_px = rank.view(-1, gh, gw).repeat_interleave(ph, 1).repeat_interleave(pw, 2).to(device)  # [B, H, W]
        counts = self._step_counts(n_patch)
        out = rank_curve(adapter, images, canvas, rank_px, counts, self.insert, self._readout, targets,
                         self.batch_size)
        return out, torch.tensor(counts, dtype=torch.float32) / n_patch

    def _step_counts(self, n_patch: int) -> list[int]:
        return list(range(0, n_patch, self.step)) + [n_patch]

    def _readout(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return apply_score(self.score_fn, logits).gather(1, target[:, None])[:, 0]

    def area(self, scores: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        """The metric's value ``[B]`` from a curve given by :meth:`curve`."""
        return auc(scores, fractions)


def auc(curve: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under ``curve`` ``[B, n]`` over ``x`` ``[n]`` in [0, 1] (normalised AUC), ``[B]``."""
    return ((curve[:, 1:] + curve[:, :-1]) / 2 * (x[1:] - x[:-1])).sum(1)


@register
class Deletion(_PatchCurve):
    """Deletion AUC: remove the most relevant patches first; a faithful map makes the score fall fast (lower
    is better). The x axis is the share of patches removed."""

    name = "deletion"
    higher_is_better = False
    insert = False


@register
class Insertion(_PatchCurve):
    """Insertion AUC: reveal the most relevant patches first on a blurred canvas; a faithful map makes the
    score rise fast (higher is better)."""

    name = "insertion"
    higher_is_better = True
    insert = True


class _Perturbation(_PatchCurve):
    """Chefer et al. (CVPR 2021) protocol on the patch grid: top-1 correctness (prediction == target) after
    removing 0 %, 10 %, …, 90 % of the patches (0 % is the clean image), area over that range ([B], the
    dataset mean is the accuracy AUC). Removed patches show ``canvas`` (default: zeros in normalised space).
    """

    needs_model = True
    FRACTIONS = tuple(k / 10 for k in range(10))

    def __init__(self, canvas=None, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__(step=1, canvas=canvas if canvas is not None else "mean", score="logit",
                         batch_size=batch_size, seed=seed)

    def _step_counts(self, n_patch: int) -> list[int]:
        return [round(f * n_patch) for f in self.FRACTIONS]

    def _readout(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(-1) == target).float()

    def area(self, scores: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        nominal = torch.tensor(self.FRACTIONS)  # the protocol's x axis; patch counts are rounded to it
        return auc(scores, nominal) / (nominal[-1] - nominal[0])


@register
class PositivePerturbation(_Perturbation):
    """Most relevant patches removed first: accuracy should fall fast (lower is better)."""

    name = "positive_perturbation"
    higher_is_better = False
    most_relevant_first = True


@register
class NegativePerturbation(_Perturbation):
    """Least relevant patches removed first: accuracy should hold (higher is better)."""

    name = "negative_perturbation"
    higher_is_better = True
    most_relevant_first = False
