"""Published protocols, scored as their authors score them, so caap's numbers can sit beside published tables.

caap's own curve metrics (:mod:`caap.metrics.faithfulness`) work on the model's patch grid, on two canvases. Papers
score at pixel level, each its own way; these metrics reproduce two that the newer rivals' tables use:

- ``deletion_tis`` / ``insertion_tis``: Transformer Input Sampling's evaluation (Englebert et al., ICCV 2023
  workshops; github.com/aenglebert/Transformer_Input_Sampling, ``metrics/``): the map upsampled bilinearly to the
  input, pixels ranked from the highest, ``ceil(H·W / 224)`` pixels changed per step over 224 steps (the first step
  already changed, the last all), removed pixels (deletion) or not yet inserted ones (insertion) showing the image
  blurred by a Gaussian kernel of 11 × 11 pixels, σ 5 (``torchvision``'s ``gaussian_blur`` on the normalised
  input), the target's softmax probability read at each step; the value is the mean over the 224 steps (their
  evaluation writes the per-step scores; the area under them at unit spacing).
- ``positive_perturbation_chefer`` / ``negative_perturbation_chefer``: Chefer, Gur & Wolf (CVPR 2021;
  github.com/hila-chefer/Transformer-Explainability, ``baselines/ViT/pertubation_eval_from_hdf5.py``): the map
  upsampled bilinearly to the input (their ``interpolate(scale_factor=16)``), the top 10 %, 20 %, …, 90 % of the
  pixels (the least relevant first for negative perturbation) set to 0 in the unnormalised image (black), top-1
  correctness against the target at each fraction and on the clean image; the value is the area over 0–90 %
  divided by 0.9 (the accuracy AUC the paper tables, per image).

Ties in a map are broken in the same seeded order for every method (:func:`caap.metrics.base.tie_break`); the
authors' own code takes ties in the order its sort leaves them. Pixel maps are used as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from caap.adapters import adapt
from caap.core.contexts import make_context
from caap.errors import CaapError
from caap.metrics.base import CurveMetric, rank_curve, ranked, register, tie_break


def upsampled(maps: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """Maps ``[B, h, w]`` at the input size ``[B, H, W]``, bilinear (maps already at the input size unchanged)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.float()
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=antialias)[:, 0]


class _PixelCurve(CurveMetric):
    """Base: pixels ranked by the upsampled map, changed ``counts[k]`` at step ``k``; the readout of each step."""

    most_relevant_first = True
    insert = False
    antialias = False

    def __init__(self, batch_size: int = 32, seed: int = 0) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CaapError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CaapError(f"seed must be an int (the order of tied pixels), got {seed!r}")
        self.batch_size, self.seed = batch_size, seed

    def _counts(self, n_pixels: int) -> list[int]:
        raise NotImplementedError

    def _canvas(self, images: torch.Tensor, adapter) -> torch.Tensor:
        raise NotImplementedError

    def _readout(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def curve(self, model, images: torch.Tensor, targets: torch.Tensor,
              maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values [B, n], fractions [n])``: the readout after changing ``counts[k]`` of the ``H·W`` pixels."""
        adapter = adapt(model)
        adapter.check_input(images)
        device = next(adapter.model.parameters()).device
        images = images.to(device)
        h, w = images.shape[-2:]
        n = h * w
        pixels = upsampled(maps, (h, w), self.antialias).flatten(1)  # [B, H·W]
        order = ranked(pixels, tie_break(n, self.seed), self.most_relevant_first)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n).expand_as(order))
        rank = rank.view(-1, h, w).to(device)  # 0 = changed first
        counts = self._counts(n)
        out = rank_curve(adapter, images, self._canvas(images, adapter), rank, counts, self.insert, self._readout,
                         targets, self.batch_size)
        return out, torch.tensor(counts, dtype=torch.float32) / n


class _TISCurve(_PixelCurve):
    """TIS's insertion / deletion (module docstring)."""

    STEPS, KERNEL, SIGMA = 224, 11, 5.0
    antialias = True  # torchvision's Resize, which their evaluation uses, antialiases by default

    def _counts(self, n_pixels: int) -> list[int]:
        per_step = math.ceil(n_pixels / self.STEPS)
        return [min(per_step * (k + 1), n_pixels) for k in range(self.STEPS)]

    def _canvas(self, images: torch.Tensor, adapter) -> torch.Tensor:
        from torchvision.transforms.functional import gaussian_blur

        return gaussian_blur(images, kernel_size=[self.KERNEL, self.KERNEL], sigma=[self.SIGMA, self.SIGMA])

    def _readout(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(-1).gather(1, target[:, None])[:, 0]

    def area(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return values.mean(1)


@register
class TISDeletion(_TISCurve):
    """Deletion as TIS's authors score it (224 pixel steps, blurred 11 × 11 σ 5, softmax); lower is better."""

    name = "deletion_tis"
    higher_is_better = False


@register
class TISInsertion(_TISCurve):
    """Insertion as TIS's authors score it (224 pixel steps, blurred 11 × 11 σ 5, softmax); higher is better."""

    name = "insertion_tis"
    higher_is_better = True
    insert = True


class _CheferPerturbation(_PixelCurve):
    """Chefer et al.'s positive / negative perturbation (module docstring)."""

    FRACTIONS = tuple(k / 10 for k in range(10))

    def _counts(self, n_pixels: int) -> list[int]:
        return [int(n_pixels * f) for f in self.FRACTIONS]

    def _canvas(self, images: torch.Tensor, adapter) -> torch.Tensor:
        return make_context("black")(images, adapter.normalization)  # 0 in the unnormalised image

    def _readout(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(-1) == target).float()

    def area(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        nominal = torch.tensor(self.FRACTIONS)
        return ((values[:, 1:] + values[:, :-1]) / 2 * (nominal[1:] - nominal[:-1])).sum(1) / nominal[-1]


@register
class CheferPositivePerturbation(_CheferPerturbation):
    """Positive perturbation as Chefer et al. score it (pixels to black, most relevant first); lower is better."""

    name = "positive_perturbation_chefer"
    higher_is_better = False


@register
class CheferNegativePerturbation(_CheferPerturbation):
    """Negative perturbation as Chefer et al. score it (pixels to black, least relevant first); higher is better."""

    name = "negative_perturbation_chefer"
    higher_is_better = True
    most_relevant_first = False
