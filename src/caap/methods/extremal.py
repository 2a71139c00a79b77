"""Extremal perturbations (Fong, Patrick & Vedaldi, ICCV 2019, "Understanding Deep Networks via Extremal
Perturbations and Smooth Masks"), the preservation game, as the authors' TorchRay implements it:

- the image is blended into a pyramid of Gaussian blurs (``levels`` levels, sigma from ``max_blur`` down to 0,
  zero padding); a mask value ``m`` reads the pyramid at level ``m · (levels − 1)`` (linear interpolation), so
  ``m = 1`` keeps the pixel and ``m = 0`` blurs it most;
- the mask is a smooth function of one parameter per ``step × step`` cell: each pixel takes a soft maximum
  (softmax pooling, coldness 20) of the neighbouring parameters weighted by ``exp(−2 max(δ/σ − ½, 0)²)``, ``δ``
  the distance to the parameter's centre and ``σ`` = ``smoothing``;
- the objective is the target's logit of the blended image minus ``λ · mean((sort(mask) − r)²)`` with ``r``
  the sorted mask of area ``area`` (zeros then ones); ``λ`` starts at 300 and grows by 0.35 % per step;
- parameters start at 1 and take ``steps`` SGD steps (learning rate 0.01, momentum and dampening 0.9), clipped
  to [0, 1]; every other step the blended image is flipped left-right (``jitter``).

Several areas give several masks; the map is their mean. Images and areas are optimised together in one
batch; each image's mask depends only on that image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from caap.errors import CaapError
from caap.methods.base import Explainer, Maps, register


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` ``[B, C, H, W]``, half-width ``ceil(4σ)``, zero padding."""
    width = math.ceil(4 * sigma)
    if width == 0:
        return x.clone()
    taps = torch.arange(-width, width + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-(taps / (math.sqrt(2) * sigma)) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(width, 0), groups=c)
    return F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, width), groups=c)


def blur_pyramid(images: torch.Tensor, levels: int, max_blur: float) -> torch.Tensor:
    """``[B, levels, C, H, W]``: level ``l`` blurred with sigma ``(1 − l/(levels−1)) · max_blur`` (last = input)."""
    return torch.stack([gaussian_blur(images, (1 - float(t)) * max_blur)
                        for t in torch.linspace(0, 1, levels)], 1)


def blend(pyramid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Read ``pyramid`` ``[B, L, C, H, W]`` at level ``mask · (L−1)`` per pixel; ``mask`` ``[B, K, H, W]``
    in [0, 1] -> ``[B, K, C, H, W]``."""
    levels = pyramid.shape[1]
    w = mask * (levels - 1)
    k = w.floor().detach()
    w = w - k
    k = k.long()
    pyr = pyramid[:, None].expand(-1, mask.shape[1], -1, -1, -1, -1)  # [B, K, L, C, H, W]
    index = k[:, :, None, None].expand(-1, -1, 1, pyramid.shape[2], -1, -1)
    lower = pyr.gather(2, index)[:, :, 0]
    upper = pyr.gather(2, (index + 1).clamp(max=levels - 1))[:, :, 0]
    return (1 - w[:, :, None]) * lower + w[:, :, None] * upper


class SmoothMask:
    """Parameters ``[n, 1, h_in, w_in]`` (one per ``step``-pixel cell) -> smooth masks over ``shape`` (and over
    the larger grid the area constraint sees)."""

    coldness = 20.0

    def __init__(self, shape: tuple[int, int], step: int, sigma: float, device=None) -> None:
        self.shape, self.step, self.sigma = shape, step, sigma
        self.margin = sigma
        self.padding = 1 + math.ceil((self.margin + sigma) / step)
        self.radius = 1 + math.ceil(sigma / step)
        self.shape_in = [math.ceil(s / step) for s in shape]
        size = 2 * self.radius + 1
        self.shape_mid = [s + 2 * self.padding - size + 1 for s in self.shape_in]
        self.shape_up = [step * s for s in self.shape_mid]
        self.shape_out = [s - step + 1 for s in self.shape_up]
        ratio = [torch.tensor(m, dtype=torch.float32) / torch.tensor(u, dtype=torch.float32)
                 for m, u in zip(self.shape_mid, self.shape_up, strict=True)]
        uy, ux = torch.meshgrid(torch.arange(self.shape_out[0], dtype=torch.float32),
                                torch.arange(self.shape_out[1], dtype=torch.float32), indexing="ij")
        weights = []
        for ky in range(size):
            for kx in range(size):
                cy = torch.floor(ratio[0] * uy) + ky - self.padding  # the parameter cell this tap reads
                cx = torch.floor(ratio[1] * ux) + kx - self.padding
                dist = torch.sqrt((uy - (self.margin + step * cy)) ** 2 + (ux - (self.margin + step * cx)) ** 2)
                weights.append(torch.exp(-2 * ((dist / sigma - 0.5).clamp(min=0) ** 2)))
        self.weight = torch.stack(weights)[None].to(device)  # [1, size², out_h, out_w]

    def __call__(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask [n, 1, H, W], full mask [n, 1, out_h, out_w])``, both in [0, 1]."""
        size = 2 * self.radius + 1
        taps = F.unfold(params, (size, size), padding=(self.padding, self.padding))
        taps = taps.reshape(len(params), -1, *self.shape_mid)
        taps = F.interpolate(taps, size=self.shape_up, mode="nearest")[..., :self.shape_out[0], :self.shape_out[1]]
        taps = self.weight.to(taps.dtype) * taps
        full = (taps * F.softmax(self.coldness * taps, dim=1)).sum(1, keepdim=True).clamp(0, 1)
        m = round(self.margin)
        return full[:, :, m:m + self.shape[0], m:m + self.shape[1]], full


def _areas(value) -> tuple[float, ...]:
    items = value.split(",") if isinstance(value, str) else ([value] if isinstance(value, (int, float)) else value)
    try:
        areas = tuple(float(a) for a in items)
    except (TypeError, ValueError):
        areas = ()
    if not areas or isinstance(value, bool) or not all(0 < a < 1 for a in areas):
        raise CaapError(f"area must be a share in (0, 1) or a list of them (e.g. 0.05,0.1,0.2), got {value!r}")
    return areas


def _positive(name: str, value, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        raise CaapError(f"{name} must be a positive {kind.__name__}, got {value!r}")
    return kind(value)


@register
class ExtremalPerturbation(Explainer):
    """Extremal perturbations, preservation game (see the module docstring).

    Args:
        area: the mask's area as a share of the image, or several (``0.05,0.1,0.2``: the map is the masks' mean).
        steps: optimisation steps (TorchRay: 800). smoothing: the mask's smoothing sigma in pixels (21).
        step: pixels per mask parameter (7). levels: blur levels (8). max_blur: the strongest blur's sigma (20).
        jitter: flip the blended image left-right every other step. reward: ``"logit"`` (the target's logit)
            or ``"contrastive"`` (the target's logit minus the largest other one).
    """

    model_agnostic = True
    name = "extremal_perturbation"
    resolution = "pixel"
    needs_grad = True
    signed = False

    def __init__(self, model, area=0.1, steps: int = 800, smoothing: float = 21.0, step: int = 7, levels: int = 8,
                 max_blur: float = 20.0, jitter: bool = True, reward: str = "logit", **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.areas = _areas(area)
        self.steps, self.step = _positive("steps", steps), _positive("step", step)
        self.smoothing, self.max_blur = _positive("smoothing", smoothing, float), _positive("max_blur", max_blur, float)
        self.levels = _positive("levels", levels)
        if self.levels < 2:
            raise CaapError(f"levels must be at least 2, got {levels!r}")
        if not isinstance(jitter, bool):
            raise CaapError(f"jitter must be true or false, got {jitter!r}")
        if reward not in ("logit", "contrastive"):
            raise CaapError(f"reward must be 'logit' or 'contrastive', got {reward!r}")
        self.jitter, self.reward = jitter, reward

    def settings(self) -> dict:
        return {**super().settings(), "area": list(self.areas), "steps": self.steps, "smoothing": self.smoothing,
                "step": self.step, "levels": self.levels, "max_blur": self.max_blur, "jitter": self.jitter,
                "reward": self.reward}

    def masks(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The optimised masks ``[B, areas, H, W]`` (the mask of the last step's forward, as TorchRay returns)."""
        b, k = images.shape[0], len(self.areas)
        size = (images.shape[2], images.shape[3])
        pyramid = blur_pyramid(images, self.levels, self.max_blur)  # [B, L, 3, H, W]
        generator = SmoothMask(size, self.step, self.smoothing, images.device)
        params = torch.ones(b * k, 1, *generator.shape_in, device=images.device, dtype=images.dtype)
        n_out = generator.shape_out[0] * generator.shape_out[1]
        reference = torch.ones(k, n_out, device=images.device, dtype=images.dtype)
        for i, a in enumerate(self.areas):
            reference[i, : int(n_out * (1 - a))] = 0
        reference = reference.repeat(b, 1)  # [B*K, n_out]
        tgt = target.to(images.device).repeat_interleave(k)
        velocity = torch.zeros_like(params)
        weight = 300.0
        bar = self.progress_bar(self.steps, unit="step")
        for t in range(self.steps):
            with torch.enable_grad():
                params.requires_grad_(True)
                mask, full = generator(params)  # [B*K, 1, H, W], [B*K, 1, oh, ow]
                x = blend(pyramid, mask.view(b, k, *size)).flatten(0, 1)  # [B*K, 3, H, W]
                if self.jitter and t % 2 == 0:
                    x = x.flip(3)
                logits = self.adapter.forward(x)
                reward = logits.gather(1, tgt[:, None])[:, 0]
                if self.reward == "contrastive":
                    others = logits.scatter(1, tgt[:, None], -100.0)
                    reward = reward - others.max(1).values
                regul = ((full.flatten(1).sort(1).values - reference) ** 2).mean(1) * weight
                (grad,) = torch.autograd.grad((regul - reward).sum(), params)
            with torch.no_grad():  # SGD, momentum 0.9, dampening 0.9, lr 0.01 (torch.optim.SGD's update)
                velocity = grad if t == 0 else 0.9 * velocity + 0.1 * grad
                params = (params.detach() - 0.01 * velocity).clamp(0, 1)
            weight *= 1.0035
            bar.update()
        bar.close()
        return mask.detach().view(b, k, *size)

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        masks = self.masks(images, target)
        return Maps(masks.mean(1), meta={"forward_passes": images.shape[0] * len(self.areas) * self.steps})
