"""Neutral context images for CAAP (docs/METHOD.md): the run that source activations are patched into.

All images here are *normalised* model inputs ``[B, 3, H, W]``; ``Normalization`` converts pixel values
(in ``[0, 1]``) to that space where a context is defined in pixels (``black``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from caap.errors import CaapError
from caap.specs import parse

MAX_BLUR_SIGMA = 1000.0  # pixels: beyond any input size a blur is a flat image; bounds the kernel's memory
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(pixel - mean) / std`` used by the model's preprocessing; pixels are in ``[0, 1]``."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` pixels in ``[0, 1]`` -> model inputs."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs ``[B, C, H, W]`` -> pixels (not clipped)."""
        mean, std = self._stats(inputs)
        return inputs * std + mean

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
        return mean, std


class Context(ABC):
    """Builds one context image per source image: ``[B, 3, H, W] -> [B, 3, H, W]`` (normalised space)."""

    name: str = "context"

    @abstractmethod
    def __call__(self, images: torch.Tensor, norm: Normalization) -> torch.Tensor: ...

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def describe(self) -> str:
        """A short, JSON-friendly description, e.g. ``"blur:10.0"``."""
        return self.name


class Mean(Context):
    """The all-zero normalised image, i.e. the dataset-mean colour everywhere."""

    name = "mean"

    def __call__(self, images: torch.Tensor, norm: Normalization) -> torch.Tensor:
        return torch.zeros_like(images)


class Black(Context):
    """Pixel value 0 in every channel, expressed in the model's normalised space."""

    name = "black"

    def __call__(self, images: torch.Tensor, norm: Normalization) -> torch.Tensor:
        return norm.normalize(torch.zeros_like(images))


class Blur(Context):
    """Gaussian blur of the source image; ``sigma`` in input pixels (edges replicated)."""

    name = "blur"

    def __init__(self, sigma: float = 10.0) -> None:
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and 0 < sigma <= MAX_BLUR_SIGMA):
            raise CaapError(f"blur sigma must be a positive number of pixels up to {MAX_BLUR_SIGMA}, got {sigma!r}")
        self.sigma = float(sigma)

    def describe(self) -> str:
        return f"blur:{self.sigma:g}"

    def __call__(self, images: torch.Tensor, norm: Normalization) -> torch.Tensor:
        return gaussian_blur(images, self.sigma)


class Noise(Context):
    """Seeded Gaussian noise with standard deviation ``std`` in normalised units.

    The same noise image (drawn on the CPU from ``seed``) is used for every source image, so a map does not
    depend on the image's position in a batch or on the device.
    """

    name = "noise"

    def __init__(self, std: float = 1.0, seed: int = 0) -> None:
        if not (isinstance(std, (int, float)) and math.isfinite(std) and std >= 0):
            raise CaapError(f"noise std must be a non-negative number, got {std!r}")
        self.std = float(std)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise CaapError(f"noise seed must be an integer in 0..2**63-1, got {seed!r}")
        self.seed = seed

    def describe(self) -> str:
        return f"noise:{self.std:g}:{self.seed}"

    def __call__(self, images: torch.Tensor, norm: Normalization) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(images.shape[1:], generator=gen, dtype=torch.float32) * self.std
        return noise.to(images.device, images.dtype).expand_as(images).clone()


class Fixed(Context):
    """A user-given context: ``[3, H, W]`` (shared by all images) or ``[B, 3, H, W]`` (one per image)."""

    name = "tensor"

    def __init__(self, image: torch.Tensor) -> None:
        if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4):
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise CaapError(f"a context tensor must be [3, H, W] or [B, 3, H, W], got {got}")
        if not image.is_floating_point():
            raise CaapError(f"a context tensor must be a normalised float image, got dtype {image.dtype}")
        bad = ~torch.isfinite(image)
        if bad.any():
            raise CaapError(f"a context tensor must be finite; it holds {int(bad.sum())} NaN or infinite value(s) "
                            "(every map would be NaN)")
        self.image = image

    def __repr__(self) -> str:
        return f"Fixed(shape={tuple(self.image.shape)})"

    def __call__(self, images: torch.Tensor, norm: Normalization) -> torch.Tensor:
        ctx = self.image.to(images.device, images.dtype)
        if ctx.dim() == 3:
            ctx = ctx[None].expand(images.shape[0], -1, -1, -1)
        if ctx.shape != images.shape:
            raise CaapError(
                f"context tensor has shape {tuple(self.image.shape)}, expected [3, H, W] or [B, 3, H, W] "
                f"matching the images {tuple(images.shape)}"
            )
        return ctx.clone()


CONTEXTS: dict[str, type[Context]] = {"mean": Mean, "black": Black, "blur": Blur, "noise": Noise}


def make_context(spec: str | Context | torch.Tensor) -> Context:
    """Turn a context option into a :class:`Context`.

    Accepts a :class:`Context`, a tensor, or a spec in caap's grammar (:mod:`caap.specs`): ``"mean"``,
    ``"black"``, ``"blur"``, ``"blur:sigma=8"`` or ``"blur:8"``, ``"noise:std=0.5:seed=3"`` or ``"noise:0.5:3"``.
    """
    if isinstance(spec, Context):
        return spec
    if isinstance(spec, torch.Tensor):
        return Fixed(spec)
    if not isinstance(spec, str):
        raise CaapError(f"context must be a name, a tensor or a caap Context, got {type(spec).__name__}")
    parsed = parse(spec, "context")
    if parsed.name not in CONTEXTS:
        raise CaapError(f"unknown context {spec!r}; expected one of {sorted(CONTEXTS)} or a tensor")
    cls = CONTEXTS[parsed.name]
    params = _CONTEXT_PARAMS[parsed.name]
    values = [*parsed.args]
    if len(values) > len(params) or set(parsed.options) - set(params):
        usage = ", ".join(f"{n}:{':'.join(p.upper() for p in ps)}" for n, ps in _CONTEXT_PARAMS.items() if ps)
        raise CaapError(f"context {spec!r} takes no such options ({usage})")
    kwargs = dict(zip(params, values, strict=False))
    for key, value in parsed.options.items():
        if key in kwargs:
            raise CaapError(f"context {spec!r}: {key} is given twice")
        kwargs[key] = value
    for key, value in kwargs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CaapError(f"context {spec!r}: options must be numbers, {key} got {value!r}")
    if "seed" in kwargs:
        if not float(kwargs["seed"]).is_integer():
            raise CaapError(f"context {spec!r}: the noise seed must be an integer")
        kwargs["seed"] = int(kwargs["seed"])
    return cls(**kwargs)


_CONTEXT_PARAMS: dict[str, tuple[str, ...]] = {"mean": (), "black": (), "blur": ("sigma",), "noise": ("std", "seed")}


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` with std ``sigma`` pixels, kernel radius ``ceil(3 sigma)``."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.device, images.dtype)
    b, c, h, w = images.shape
    out = images.reshape(b * c, 1, h, w)  # [B*C, 1, H, W]
    out = F.pad(out, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, -1, 1))
    return out.reshape(b, c, h, w)
