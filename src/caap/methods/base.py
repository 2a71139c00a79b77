"""The interface every attribution method shares: ``Explainer(model, **config).explain(images, target)``."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from caap.adapters import Adapter, adapt
from caap.core.attribution import Attribution
from caap.core.contexts import Normalization
from caap.core.state import check_dtype, eval_mode, on_device
from caap.core.targets import TargetLike


class Explainer(ABC):
    """Base class: owns input checks, model state and timing; a subclass implements ``_explain``.

    Class attributes describe the method for runners, the CLI and tests:
        name: registry name.
        resolution: ``"patch"`` (maps on the patch grid) or ``"pixel"`` (maps at input resolution).
        needs_grad: uses gradients. needs_attention: reads attention maps.
        signed: maps carry a sign (positive = evidence for the target).
    """

    name: ClassVar[str] = ""
    resolution: ClassVar[str] = "patch"
    needs_grad: ClassVar[bool] = False
    needs_attention: ClassVar[bool] = False
    signed: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module | Adapter,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        normalization: Normalization | None = None,
    ) -> None:
        self.adapter = adapt(model, normalization)
        self.model = self.adapter.model
        self.device = torch.device(device) if device is not None else None
        self.dtype = check_dtype(dtype)

    def explain(self, images: torch.Tensor, target: TargetLike = None, **kwargs) -> Attribution:
        """Explain normalised images ``[B, 3, H, W]`` for ``target`` (None: each image's top-1 class).

        The model is put in eval mode (and on ``device``) for the call and left exactly as it was found.
        """
        grid = self.adapter.check_input(images)
        start = time.perf_counter()
        with on_device(self.model, self.device) as device, eval_mode(self.model):
            att = self._explain(images.to(device), target, grid=grid, device=device, **kwargs)
        att.meta.setdefault("method", self.name)
        att.meta["seconds"] = time.perf_counter() - start
        return att

    @abstractmethod
    def _explain(
        self, images: torch.Tensor, target: TargetLike, *, grid: tuple[int, int], device: torch.device, **kwargs
    ) -> Attribution: ...

    def attribute(self, inputs: torch.Tensor, target: TargetLike = None, mode: str = "bilinear") -> torch.Tensor:
        """Pixel-resolution maps ``[B, 1, H, W]`` (float32, CPU) in the Captum / Quantus layout."""
        return self.explain(inputs, target).to_pixels(mode=mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__})"
