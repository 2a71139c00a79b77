"""Input-gradient baselines: saliency, input × gradient, integrated gradients, SmoothGrad.

All are pixel-level. ``meta["channels"]`` holds the per-channel attributions ``[B, 3, H, W]`` (Captum's
layout, for peer checks); ``scores`` ``[B, H, W]`` reduces the channels: max of ``|grad|`` for saliency and
SmoothGrad (Simonyan et al. 2014), the sum for input × gradient and integrated gradients (which keeps IG's
completeness: the map sums to ``s(x) - s(baseline)`` up to the integration error).
"""

from __future__ import annotations

import numpy as np
import torch

from caap.core.contexts import Context, make_context
from caap.errors import CaapError
from caap.methods.base import Explainer, Forward, Maps, register, target_grad


class GradientExplainer(Explainer):
    """Base: computes target-logit gradients w.r.t. the input; a subclass turns them into attributions."""

    model_agnostic = True
    resolution = "pixel"
    needs_grad = True
    reduce = "sum"

    def _attribute(self, images, target, *, grid, forward: Forward) -> Maps:
        channels = self._channels(images, target.to(images.device), forward).detach()  # [B, 3, H, W]
        scores = channels.abs().amax(1) if self.reduce == "max_abs" else channels.sum(1)
        return Maps(scores, meta={"channels": channels.float().cpu()})

    def _channels(self, images: torch.Tensor, target: torch.Tensor, forward: Forward) -> torch.Tensor:
        raise NotImplementedError

    def gradient(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d logit[target] / d inputs, ``[B, 3, H, W]``; parameters' ``.grad`` are never touched."""
        with torch.enable_grad():
            x = inputs.detach().requires_grad_(True)
            return target_grad(self.adapter.forward(x), target, x)[0]


class _PlainGradient(GradientExplainer):
    """Saliency and input × gradient: the forward that resolves the target is the one differentiated."""

    def _forward(self, images: torch.Tensor) -> Forward:
        with torch.enable_grad():
            x = images.detach().requires_grad_(True)
            logits = self.adapter.forward(x)
        return Forward(logits.detach(), (x, logits))

    def _input_grad(self, target: torch.Tensor, forward: Forward) -> torch.Tensor:
        x, logits = forward.cache
        return target_grad(logits, target, x)[0]


@register
class Saliency(_PlainGradient):
    """``|d logit_c / d x|`` (Simonyan et al. 2014); Captum ``Saliency(abs=True)``."""

    name = "saliency"
    signed = False
    reduce = "max_abs"

    def _channels(self, images, target, forward):
        return self._input_grad(target, forward).abs()


@register
class InputXGradient(_PlainGradient):
    """``x * d logit_c / d x`` (Shrikumar et al. 2016); Captum ``InputXGradient``."""

    name = "input_x_gradient"

    def _channels(self, images, target, forward):
        return images * self._input_grad(target, forward)


@register
class IntegratedGradients(GradientExplainer):
    """Integrated gradients (Sundararajan et al. 2017): ``(x - x0) * ∫ grad(x0 + a (x - x0)) da``.

    Args:
        steps: number of points on the path.
        method: ``"gausslegendre"`` (default, as Captum), ``"riemann_trapezoid"``, ``"riemann_left"``,
            ``"riemann_right"``, ``"riemann_middle"``.
        baseline: ``"mean"`` (all-zero normalised image), ``"black"``, ``"blur[:SIGMA]"``, a tensor or a
            :class:`~caap.core.contexts.Context`, as CAAP's contexts.
        internal_batch_size: path points evaluated per forward (all images of a call at once).
    """

    name = "integrated_gradients"
    METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")

    def __init__(self, model, steps: int = 50, method: str = "gausslegendre",
                 baseline: str | torch.Tensor | Context = "mean", internal_batch_size: int = 64, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(steps, int) or steps < 2:
            raise CaapError(f"steps must be an int >= 2, got {steps!r}")
        if method not in self.METHODS:
            raise CaapError(f"unknown integration method {method!r}; expected one of {self.METHODS}")
        _check_internal_batch(internal_batch_size)
        self.steps, self.method = steps, method
        self.baseline = make_context(baseline)
        self.internal_batch_size = internal_batch_size

    def settings(self) -> dict:
        return {**super().settings(), "steps": self.steps, "integration": self.method,
                "baseline": self.baseline.describe(), "internal_batch_size": self.internal_batch_size}

    def alphas_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Points ``a_i`` in [0, 1] and weights ``w_i`` with ``∫ f ≈ Σ w_i f(a_i)``."""
        n = self.steps
        if self.method == "gausslegendre":
            x, w = np.polynomial.legendre.leggauss(n)
            return 0.5 * (x + 1), 0.5 * w
        if self.method == "riemann_trapezoid":
            w = np.full(n, 1.0 / (n - 1))
            w[[0, -1]] *= 0.5
            return np.linspace(0, 1, n), w
        offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[self.method]
        return (np.arange(n) + offset) / n, np.full(n, 1.0 / n)

    def _channels(self, images, target, forward):
        baseline = self.baseline(images, self.adapter.normalization)  # [B, 3, H, W]
        alphas, weights = self.alphas_weights()
        delta = images - baseline
        total = torch.zeros_like(images)
        b = images.shape[0]
        per_chunk = max(1, self.internal_batch_size // b)
        for start in range(0, len(alphas), per_chunk):
            a = torch.tensor(alphas[start : start + per_chunk], dtype=images.dtype, device=images.device)
            w = torch.tensor(weights[start : start + per_chunk], dtype=images.dtype, device=images.device)
            path = baseline[None] + a.view(-1, 1, 1, 1, 1) * delta[None]  # [k, B, 3, H, W]
            grads = self.gradient(path.flatten(0, 1), target.repeat(len(a)))  # [k*B, 3, H, W]
            total += (grads.view(len(a), *images.shape) * w.view(-1, 1, 1, 1, 1)).sum(0)
        return delta * total


@register
class SmoothGrad(GradientExplainer):
    """SmoothGrad (Smilkov et al. 2017): the mean of ``|grad|`` over noisy copies of the input.

    Args:
        noise_level: noise standard deviation as a fraction of each image's value range (max - min).
        samples: noisy copies per image.
        seed: noise seed (drawn on the CPU: identical on every device). Sample ``s`` adds the same noise
            pattern (scaled by each image's range) to every image, so a map never depends on its batch.
        internal_batch_size: noisy copies evaluated per forward.
    """

    name = "smoothgrad"
    signed = False
    reduce = "max_abs"

    def __init__(self, model, noise_level: float = 0.15, samples: int = 25, seed: int = 0,
                 internal_batch_size: int = 64, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)) or not noise_level >= 0:
            raise CaapError(f"noise_level must be >= 0, got {noise_level!r}")
        if not isinstance(samples, int) or samples < 1:
            raise CaapError(f"samples must be a positive int, got {samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CaapError(f"seed must be an int, got {seed!r}")
        _check_internal_batch(internal_batch_size)
        self.noise_level, self.samples, self.seed = float(noise_level), samples, seed
        self.internal_batch_size = internal_batch_size

    def settings(self) -> dict:
        return {**super().settings(), "noise_level": self.noise_level, "samples": self.samples, "seed": self.seed,
                "internal_batch_size": self.internal_batch_size}

    def _channels(self, images, target, forward):
        gen = torch.Generator().manual_seed(self.seed)
        b = images.shape[0]
        sigma = self.noise_level * (images.flatten(1).amax(1) - images.flatten(1).amin(1))  # [B]
        total = torch.zeros_like(images)
        per_chunk = max(1, self.internal_batch_size // b)
        for start in range(0, self.samples, per_chunk):
            k = min(per_chunk, self.samples - start)
            # one noise draw per sample, shared by every image: a map never depends on its batch mates
            noise = torch.randn((k, *images.shape[1:]), generator=gen).to(images.device, images.dtype)  # [k, 3, H, W]
            noisy = images[None] + noise[:, None] * sigma.view(1, -1, 1, 1, 1)  # [k, B, 3, H, W]
            grads = self.gradient(noisy.flatten(0, 1), target.repeat(k))
            total += grads.abs().view(k, *images.shape).sum(0)
        return total / self.samples


def _check_internal_batch(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CaapError(f"internal_batch_size must be a positive int, got {value!r}")
