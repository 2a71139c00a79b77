"""Input-perturbation baselines: patch occlusion, input-level insertion (CAAP's pixel counterpart), RISE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from caap.core.budget import check_batch_size, module_batch_size
from caap.core.contexts import Context, make_context
from caap.core.scores import ScoreFn, apply_score, make_score
from caap.errors import CaapError
from caap.methods.base import Explainer, Forward, Maps, register


def patch_masks(grid: tuple[int, int], size: tuple[int, int], device=None) -> torch.Tensor:
    """bool ``[gh*gw, H, W]``: mask ``p`` covers patch ``p`` of the grid (row-major)."""
    gh, gw = grid
    h, w = size
    rows = torch.arange(h, device=device) * gh // h  # patch row of each pixel row
    cols = torch.arange(w, device=device) * gw // w
    ids = rows[:, None] * gw + cols[None, :]  # [H, W]
    return ids[None] == torch.arange(gh * gw, device=device)[:, None, None]


def _auto_batch(explainer: Explainer, grid: tuple[int, int], device: torch.device) -> int:
    """Images per forward: the explainer's ``batch_size``, else the module budget (caap.core.budget)."""
    if explainer.batch_size is not None:
        return explainer.batch_size
    return module_batch_size(explainer.adapter.num_prefix + grid[0] * grid[1], device)


class PatchComposite(Explainer):
    """Base: one forward per patch of a composite image ``where(mask_p, inside, outside)``, batched.

    ``A[p] = sign * (s(composite_p)[c] - s(reference)[c])`` with the subclass choosing the images.
    """

    model_agnostic = True
    resolution = "patch"

    def __init__(self, model, context: str | torch.Tensor | Context = "mean", score: str | ScoreFn = "logit",
                 batch_size: int | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.context = make_context(context)
        self.score_name, self.score_fn = make_score(score)
        self.batch_size = check_batch_size(batch_size)

    def settings(self) -> dict:
        return {**super().settings(), "context": self.context.describe(), "score": self.score_name,
                "batch_size": self.batch_size}

    def _forward(self, images: torch.Tensor) -> Forward:
        with torch.inference_mode():
            return Forward(apply_score(self.score_fn, self.adapter.forward(images)))  # [B, K]

    def _layout(self, images: torch.Tensor, context: torch.Tensor):
        """``(inside, outside, reference, sign)``; each image ``[B, 3, H, W]``."""
        raise NotImplementedError

    @torch.inference_mode()
    def _attribute(self, images, tgt, *, grid, forward) -> Maps:
        b, device = images.shape[0], images.device
        context = self.context(images, self.adapter.normalization)
        inside, outside, reference, sign = self._layout(images, context)
        ref = apply_score(self.score_fn, self.adapter.forward(reference)).gather(1, tgt.to(device)[:, None])[:, 0]
        masks = patch_masks(grid, tuple(images.shape[-2:]), device)  # [P, H, W]
        n_patch = masks.shape[0]
        out = torch.empty(b * n_patch, device=device)
        tgt_dev = tgt.to(device)
        chunk = _auto_batch(self, grid, device)
        bar = self.progress_bar(b * n_patch)
        for start in range(0, b * n_patch, chunk):
            idx = torch.arange(start, min(start + chunk, b * n_patch), device=device)
            img, patch = idx // n_patch, idx % n_patch
            m = masks[patch][:, None]  # [n, 1, H, W]
            composite = torch.where(m, inside[img], outside[img])  # [n, 3, H, W]
            s = apply_score(self.score_fn, self.adapter.forward(composite))
            out[idx] = sign * (s.gather(1, tgt_dev[img, None])[:, 0] - ref[img])
            bar.update(len(idx))
        bar.close()
        return Maps(out.view(b, *grid), meta={"reference_score": ref.float().cpu(), "forward_passes": b * n_patch})


@register
class Occlusion(PatchComposite):
    """Patch occlusion on the model's patch grid (Zeiler & Fergus 2014; Captum ``Occlusion`` with a window
    and stride of one patch): ``A[p] = s(x)[c] - s(x with patch p replaced by the baseline)[c]``.

    ``context`` is the baseline image (``"mean"``: zeros in normalised space, ``"black"``, ``"blur"``, …).
    """

    name = "occlusion"

    def _layout(self, images, context):
        return context, images, images, -1.0


@register
class InputInsertion(PatchComposite):
    """The input-level counterpart of CAAP: paste the source patch's *pixels* into the context image.

    ``A[p] = s(context with patch p of x)[c] - s(context)[c]``, with CAAP's ``context`` and ``score`` options,
    so the difference from CAAP isolates what patching internal activations adds.
    """

    name = "input_insertion"

    def _layout(self, images, context):
        return images, context, context, 1.0


@register
class RISE(Explainer):
    """RISE (Petsiuk et al. 2018): saliency = E[score(x ⊙ M) · M] / p over random smooth masks.

    Args:
        masks: number of random masks.
        cells: the masks' coarse grid (``cells x cells`` binary cells, upsampled bilinearly and shifted).
        probability: probability that a cell is kept.
        seed: mask seed (masks are drawn on the CPU).
        context: what masked pixels become (``"mean"``: zeros in normalised space, as RISE's zero pixels).
        score: ``"prob"`` (as the paper), ``"logit"``, ``"logprob"`` or a callable.
        batch_size: masked images per forward.
    """

    model_agnostic = True
    name = "rise"
    resolution = "pixel"
    signed = False

    def __init__(self, model, masks: int = 4000, cells: int = 7, probability: float = 0.5, seed: int = 0,
                 context: str | torch.Tensor | Context = "mean", score: str | ScoreFn = "prob",
                 batch_size: int | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if isinstance(masks, bool) or not isinstance(masks, int) or masks < 1:
            raise CaapError(f"masks must be a positive int, got {masks!r}")
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
            raise CaapError(f"cells must be a positive int, got {cells!r}")
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 < probability <= 1:
            raise CaapError(f"probability must be in (0, 1], got {probability!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CaapError(f"seed must be an int, got {seed!r}")
        self.n_masks, self.cells, self.probability, self.seed = masks, cells, float(probability), seed
        self.context = make_context(context)
        self.score_name, self.score_fn = make_score(score)
        self.batch_size = check_batch_size(batch_size)

    def settings(self) -> dict:
        return {**super().settings(), "masks": self.n_masks, "cells": self.cells, "probability": self.probability,
                "seed": self.seed, "context": self.context.describe(), "score": self.score_name,
                "batch_size": self.batch_size}

    def make_masks(self, start: int, count: int, size: tuple[int, int]) -> torch.Tensor:
        """Masks ``start .. start+count-1`` as float ``[count, H, W]`` in [0, 1] (deterministic per index)."""
        h, w = size
        cell_h, cell_w = math.ceil(h / self.cells), math.ceil(w / self.cells)
        out = []
        for i in range(start, start + count):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            grid = (torch.rand(1, 1, self.cells, self.cells, generator=gen) < self.probability).float()
            up = F.interpolate(grid, size=((self.cells + 1) * cell_h, (self.cells + 1) * cell_w),
                               mode="bilinear", align_corners=False)
            dy, dx = (int(v) for v in torch.randint(0, cell_h, (1,), generator=gen).tolist() +
                      torch.randint(0, cell_w, (1,), generator=gen).tolist())
            out.append(up[0, 0, dy : dy + h, dx : dx + w])
        return torch.stack(out)

    @torch.inference_mode()
    def _attribute(self, images, tgt, *, grid, forward) -> Maps:
        b, device = images.shape[0], images.device
        size = tuple(images.shape[-2:])
        context = self.context(images, self.adapter.normalization)
        tgt_dev = tgt.to(device)
        saliency = torch.zeros(b, *size, device=device)
        per_chunk = max(1, _auto_batch(self, grid, device) // b)
        bar = self.progress_bar(self.n_masks * b)
        for start in range(0, self.n_masks, per_chunk):
            k = min(per_chunk, self.n_masks - start)
            m = self.make_masks(start, k, size).to(device, images.dtype)[:, None, None]  # [k, 1, 1, H, W]
            masked = (images[None] * m + context[None] * (1 - m)).flatten(0, 1)  # [k*B, 3, H, W]
            s = apply_score(self.score_fn, self.adapter.forward(masked)).view(k, b, -1)  # [k, B, K]
            weight = s.gather(2, tgt_dev.view(1, b, 1).expand(k, b, 1))[..., 0]  # [k, B]
            saliency += (weight[:, :, None, None] * m[:, 0, 0][:, None]).sum(0)
            bar.update(k * b)
        bar.close()
        saliency /= self.n_masks * self.probability
        return Maps(saliency, meta={"forward_passes": self.n_masks * b})
