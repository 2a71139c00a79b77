"""The interface every attribution method shares: ``Explainer(model, **config).explain(images, target)``.

The base class owns the call (as grad-cam's ``BaseCAM`` and Quantus's ``Metric.__call__``): it checks the
input, puts the model in eval mode for the call, runs one forward from which the target is resolved, hands
``_attribute`` the images, the resolved target and the patch grid, and builds the :class:`Attribution` with
the method's resolved settings in ``meta``. A subclass owns one idea: its ``_attribute``.
"""

from __future__ import annotations

import inspect
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
from torch import nn
from tqdm.auto import tqdm

from caap.adapters import Adapter, adapt
from caap.core.attribution import Attribution
from caap.core.contexts import Normalization
from caap.core.state import check_dtype, eval_mode, model_device, model_lock, place
from caap.core.targets import TargetLike, resolve_target
from caap.errors import CaapError
from caap.registry import Registry

PROGRESS_DELAY = 2.0  # seconds before a progress bar appears: short calls stay quiet


@dataclass
class Forward:
    """The forward pass that resolves the target: ``scores`` ``[B, K]`` (logits, or the method's score of
    them) and whatever the method keeps of that pass for ``_attribute`` (activations, attention maps…)."""

    scores: torch.Tensor
    cache: Any = None


@dataclass
class Maps:
    """What ``_attribute`` returns: ``scores`` ``[B, h, w]`` and optionally every class's maps and per-call
    metadata (tensors ``[B]`` or JSON values)."""

    scores: torch.Tensor
    class_scores: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Explainer(ABC):
    """Base class of CAAP and every baseline.

    Class attributes describe the method for runners, the CLI, figures and tests:
        name: registry name.
        resolution: ``"patch"`` (maps on the patch grid) or ``"pixel"`` (maps at input resolution).
        needs_grad: uses gradients. needs_attention: reads attention maps.
        signed: maps carry a sign (positive = evidence for the target); figures use a diverging colour map
            for signed methods and a sequential one otherwise.
        call_options: keyword options that ``explain`` takes besides images and target.
        model_agnostic: needs only ``images -> logits``, so it runs on any classifier (a ConvNeXt, a ResNet);
            the other methods read a ViT's tokens, blocks or attention.

    Args (shared by every method):
        model: a timm ``VisionTransformer``, a Hugging Face ViT/DeiT/DINOv2 classifier, or a caap adapter.
        device: where to run. The model is moved there **once, at construction, and stays there** (explaining
            a dataset image by image never copies the weights per call); ``None`` runs where the model is.
        dtype: ``None``/``torch.float32`` (exact) or ``torch.bfloat16`` / ``torch.float16`` (autocast).
        normalization: the model's input mean/std, for pixel-defined contexts (default: the model's card).
    """

    name: ClassVar[str] = ""
    resolution: ClassVar[str] = "patch"
    needs_grad: ClassVar[bool] = False
    needs_attention: ClassVar[bool] = False
    signed: ClassVar[bool] = True
    call_options: ClassVar[frozenset[str]] = frozenset()
    model_agnostic: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module | Adapter,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        normalization: Normalization | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            key = next(iter(unknown))
            raise CaapError(f"method {self.name!r} takes no option {key!r}; expected one of {self.options()}")
        if normalization is not None and not isinstance(normalization, Normalization):
            raise CaapError(f"normalization must be a caap Normalization(mean, std), got {normalization!r}")
        self.adapter = adapt(model, normalization)
        if not self.adapter.tokens and not self.model_agnostic:
            agnostic = sorted(n for n in METHODS.available() if METHODS.get(n).model_agnostic)
            raise self.adapter.unsupported(
                f"tokens: method {self.name!r} needs a ViT's token embeddings, blocks and attention (for a ViT caap "
                f"does not know, wrap it in caap.adapters.GenericAdapter); on any classifier use {', '.join(agnostic)}")
        self.model = self.adapter.model
        self.dtype = check_dtype(dtype)
        self._device = None if device is None else place(self.model, device)
        if self.device.type == "cpu":
            slow_dtype_warning(self.dtype)

    @property
    def device(self) -> torch.device:
        """Where the method runs: the ``device`` it was built with, else wherever the model is now."""
        return self._device if self._device is not None else model_device(self.model)

    @classmethod
    def options(cls) -> list[str]:
        """The constructor options this method takes (besides the model)."""
        names: list[str] = []
        for klass in cls.__mro__:
            if "__init__" not in vars(klass) or klass is object:
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("self", "model"):
                    names.append(p.name)
        return sorted(set(names))

    def describe(self) -> str:
        """A short title for figures: the method and its key settings."""
        return self.name

    def unit(self) -> str:
        """What a map's values measure, for colour bars."""
        return "attribution"

    def settings(self) -> dict[str, Any]:
        """The full configuration, JSON-friendly (a subclass adds its own options)."""
        return {"method": self.name, "dtype": str(self.dtype or torch.float32).replace("torch.", ""),
                "device": str(self.device)}

    @final
    def explain(self, images: torch.Tensor, target: TargetLike = None, *, progress: bool = True,
                **options: Any) -> Attribution:
        """Explain normalised images ``[B, 3, H, W]`` for ``target`` (None: each image's top-1 class).

        The model is in eval mode for the call and comes back with every module's mode as it was found.
        Calls on one model from several threads are safe: they hold the model's lock
        (:func:`caap.core.state.model_lock`) in turn, so each sees only its own state changes.
        ``progress``: a progress bar (``tqdm.auto``: a widget in notebooks) for calls that take more than a few
        seconds; ``False`` turns it off. ``options`` are the method's ``call_options`` (CAAP: ``all_classes``,
        ``groups``)."""
        if not isinstance(progress, bool):
            raise CaapError(f"progress must be True or False, got {progress!r}")
        unknown = sorted(set(options) - self.call_options)
        if unknown:
            expected = sorted(self.call_options) or "none"
            raise CaapError(f"method {self.name!r} takes no call option {unknown[0]!r}; expected {expected}")
        grid = self.adapter.check_input(images)
        start = time.perf_counter()
        with model_lock(self.model), eval_mode(self.model):
            self._progress = progress  # under the lock: another thread's call cannot change it mid-call
            images = images.to(self.device, self._input_dtype())  # float64 / half inputs: the model's dtype
            forward = self._forward(images)
            finite = torch.isfinite(forward.scores).all(1)
            if not bool(finite.all()):
                raise CaapError(f"the model's output for image {int((~finite).nonzero()[0, 0])} is not finite (NaN "
                                "or inf); check the model's weights")
            tgt = resolve_target(target, forward.scores)
            maps = self._attribute(images, tgt, grid=grid, forward=forward, **options)
        size = (images.shape[2], images.shape[3])
        expected = (images.shape[0], *(grid if self.resolution == "patch" else size))
        if tuple(maps.scores.shape) != expected:
            raise CaapError(f"method {self.name!r} ({self.resolution} resolution) returned maps of shape "
                            f"{tuple(maps.scores.shape)}, expected {expected}")
        meta = {**self.settings(), "signed": self.signed, "resolution": self.resolution, **maps.meta,
                "prediction": forward.scores.argmax(-1).cpu(), "seconds": time.perf_counter() - start}
        class_scores = None if maps.class_scores is None else maps.class_scores.float().cpu()
        return Attribution(maps.scores.detach().float().cpu(), tgt, size, self.name, class_scores, meta)

    def progress_bar(self, total: int | None, unit: str = "forward"):
        """A ``tqdm.auto`` bar for this call's long loop: shown only when the call asked for progress and the loop
        runs for more than ``PROGRESS_DELAY`` seconds; it disappears when done."""
        return tqdm(total=total, desc=self.name, unit=unit, leave=False, delay=PROGRESS_DELAY,
                    disable=not getattr(self, "_progress", True))

    def _input_dtype(self) -> torch.dtype:
        """The dtype of the model's parameters (inputs are cast to it; autocast handles ``dtype=``)."""
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def _forward(self, images: torch.Tensor) -> Forward:
        """One forward of the images: the scores the target is resolved from (default: the logits)."""
        with torch.inference_mode():
            return Forward(self.adapter.forward(images))

    @abstractmethod
    def _attribute(self, images: torch.Tensor, target: torch.Tensor, *, grid: tuple[int, int], forward: Forward,
                   **options: Any) -> Maps:
        """Maps for ``images`` ``[B, 3, H, W]`` (on the device) and the resolved ``target`` int64 ``[B]`` (CPU)."""

    def attribute(self, inputs: torch.Tensor, target: TargetLike = None, mode: str = "bilinear") -> torch.Tensor:
        """Pixel-resolution maps ``[B, 1, H, W]`` (float32, CPU) in the Captum / Quantus layout."""
        return self.explain(inputs, target).to_pixels(mode=mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__})"


def target_grad(logits: torch.Tensor, target: torch.Tensor, inputs):
    """``d logits[b, target[b]] / d inputs`` summed over the batch (``inputs``: a tensor or a list of them);
    parameters' ``.grad`` are never touched."""
    with torch.enable_grad():
        return torch.autograd.grad(logits.gather(1, target.to(logits.device)[:, None]).sum(), inputs)


def forward_from_leaf(adapter: Adapter, images: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A differentiable forward whose residual stream entering block ``layer`` is a leaf: ``(leaf [B, N, D],
    logits [B, C])`` (``layer=0``: the token embeddings ``z_0``)."""
    with torch.enable_grad():
        z, grid = adapter.embed(images), adapter.grid((images.shape[2], images.shape[3]))
        for index in range(layer):
            z = adapter.run_block(index, z, grid)
        leaf = z.detach().requires_grad_(True)  # [B, N, D]
        z = leaf
        for index in range(layer, adapter.num_blocks):
            z = adapter.run_block(index, z, grid)
        return leaf, adapter.head(z)


METHODS: Registry[Explainer] = Registry("method")
register = METHODS.register


def slow_dtype_warning(dtype: torch.dtype) -> None:
    """Warn when a reduced-precision ``dtype`` is slower than float32 on this CPU: float16 always (emulated), and
    bfloat16 where the CPU has no native bfloat16 instructions (measured in docs/PERFORMANCE.md)."""
    from caap.core.cpu import native_bf16

    if dtype == torch.float16:
        warnings.warn("float16 on the CPU is emulated and slower than float32; use bfloat16 (on a CPU with native "
                      "bfloat16) or float32 (docs/PERFORMANCE.md)", RuntimeWarning, stacklevel=3)
    elif dtype == torch.bfloat16 and native_bf16() is False:
        warnings.warn("bfloat16 on a CPU without native bfloat16 instructions (AVX512-BF16, AMX) is emulated and "
                      "slower than float32; use float32 here (docs/PERFORMANCE.md)", RuntimeWarning, stacklevel=3)
