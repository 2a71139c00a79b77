"""Refinement: an approximate map first, exact CAAP only where it matters.

- ``coarse_to_fine`` (``mode="exact"``, ``refine=f``): exact scores of ``coarse × coarse`` superpatches,
  then exact single patches inside the top ``f`` of them.
- ``fast_then_exact`` (``mode="fast"``, ``refine=f``; the ``caap_adaptive`` method): the fast map of every
  patch, then exact single-patch runs for the top ``f`` of the patches by that map (docs/FAST.md compares).
"""

from __future__ import annotations

import math

import torch

from caap.core.groups import superpatch_groups
from caap.methods.base import Maps


def coarse_to_fine(explainer, images, target, grid, all_classes, progress, runs) -> Maps:
    """Exact mode with ``refine``: score ``coarse × coarse`` superpatches, then single patches inside the top
    ``refine`` fraction of superpatches; the other patches get their superpatch's score over its size."""
    batch, (gh, gw) = images.shape[0], grid
    coarse = superpatch_groups(grid, explainer.coarse).expand(batch, gh, gw)  # [B, gh, gw]
    first = explainer._run(images, target, grid, explainer.device, coarse, all_classes, progress, runs)
    flat = coarse.reshape(batch, -1)  # [B, P]
    n_groups = int(flat.max()) + 1
    size = torch.zeros(batch, n_groups).scatter_add_(1, flat, torch.ones(flat.shape))  # [B, G] patches per group
    group_score = torch.zeros(batch, n_groups).scatter_reduce_(1, flat, first.scores.reshape(batch, -1), "amax",
                                                               include_self=False)  # [B, G]
    k = max(1, math.ceil(explainer.refine * n_groups))
    chosen = torch.zeros(batch, n_groups, dtype=torch.bool)
    chosen.scatter_(1, group_score.topk(k, dim=1).indices, True)
    refine_patch = chosen.gather(1, flat)  # [B, P] patch lies in a chosen group
    fine = torch.where(refine_patch, torch.arange(gh * gw).expand(batch, -1), -1).view(batch, gh, gw)
    second = explainer._run(images, target, grid, explainer.device, fine, all_classes, progress, runs)
    share = size.gather(1, flat).view(batch, gh, gw)  # [B, gh, gw] size of each patch's group
    refined = refine_patch.view(batch, gh, gw)
    scores = torch.where(refined, second.scores, first.scores / share)
    class_scores = None
    if all_classes:
        class_scores = torch.where(refined[:, None], second.class_scores, first.class_scores / share[:, None])
    meta = {**second.meta, "patched_runs": first.meta["patched_runs"] + second.meta["patched_runs"],
            "refined_patches": int(refine_patch.sum())}
    return Maps(scores, class_scores, meta)


def fast_then_exact(explainer, fast: Maps, images, target, grid, all_classes, progress, runs) -> Maps:
    """Replace the fast scores of each image's top ``refine`` fraction of patches (by the fast map) by exact
    single-patch CAAP; the rest keeps the fast map."""
    batch, (gh, gw) = images.shape[0], grid
    k = max(1, math.ceil(explainer.refine * gh * gw))
    flat = fast.scores.reshape(batch, -1)  # [B, P]
    chosen = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1).indices, True)  # [B, P]
    fine = torch.where(chosen, torch.arange(gh * gw).expand(batch, -1), -1).view(batch, gh, gw)
    exact = explainer._run(images, target, grid, explainer.device, fine, all_classes, progress, runs)
    refined = chosen.view(batch, gh, gw)
    scores = torch.where(refined, exact.scores, fast.scores)
    class_scores = None
    if all_classes:
        class_scores = torch.where(refined[:, None], exact.class_scores, fast.class_scores)
    return Maps(scores, class_scores, {**fast.meta, "patched_runs": exact.meta["patched_runs"],
                                       "refined_patches": int(chosen.sum())})
