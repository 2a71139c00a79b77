"""Quantus metrics inside caap: ``quantus:NAME[:KEY=VALUE…]`` (``quantus:Sparseness``,
``quantus:PixelFlipping:features_in_step=224``) is a caap metric, so ``caap bench --metrics`` runs it.

The Quantus class gets the model as ``images -> logits`` (through the adapter, so Hugging Face outputs work), the
images and targets, the maps at pixel resolution ``[B, 1, H, W]`` (patch maps repeated, no interpolation) and,
for localisation metrics, the masks ``[B, 1, H, W]``. Keyword options go to the Quantus class. A metric whose
result per image is a curve is reduced to the curve's mean. Metrics that re-explain the input (sensitivity,
randomisation) need Quantus's ``explain_func``: use :func:`caap.quantus.explain_func` with Quantus directly.
Quantus is not a dependency of caap; ``quantus:…`` asks for it when used.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from caap.adapters import adapt
from caap.core.state import eval_mode, model_device
from caap.errors import CaapError
from caap.metrics.base import Metric, register, to_pixels


def _quantus():
    try:
        import quantus
    except ImportError:
        raise CaapError("quantus:… metrics need the quantus package (pip install quantus)") from None
    return quantus


class _Logits(nn.Module):
    """The adapter's ``forward`` as a module, for Quantus's PyTorch model wrapper."""

    def __init__(self, adapter) -> None:
        super().__init__()
        self.inner = adapter.model
        self._forward = adapter.forward
        self.training = False  # the wrapper only; the model's own modes are set and restored by evaluate

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._forward(images)


def _no_explain(name: str):
    def explain(**_: Any):
        raise CaapError(f"quantus:{name} re-explains the images; caap bench gives Quantus maps only. Run it with "
                        "quantus directly and caap.quantus.explain_func")

    return explain


@register
class QuantusMetric(Metric):
    """A Quantus metric by name (see the module docstring); ``quantus`` alone is not a metric."""

    name = "quantus"
    quantus_name: ClassVar[str] = ""
    needs_model = True
    _variants: ClassVar[dict[str, type]] = {}

    @classmethod
    def specialise(cls, variant: str) -> type[QuantusMetric]:
        """The caap metric class of Quantus's ``variant`` (its direction and whether it needs masks)."""
        if variant not in cls._variants:
            quantus = _quantus()
            klass = getattr(quantus, variant, None)
            if not isinstance(klass, type) or not issubclass(klass, quantus.Metric):
                raise CaapError(f"unknown Quantus metric {variant!r}; expected a class of quantus such as "
                                "Sparseness, PixelFlipping, RelevanceMassAccuracy")
            category = str(getattr(klass, "evaluation_category", "")).lower()
            direction = str(getattr(klass, "score_direction", "higher")).lower()
            cls._variants[variant] = type(f"Quantus{variant}", (cls,), {
                "quantus_name": variant, "higher_is_better": "lower" not in direction,
                "needs_masks": "localisation" in category or "localization" in category,
                "__doc__": f"Quantus's {variant} as a caap metric."})
        return cls._variants[variant]

    def __init__(self, **options: Any) -> None:
        if not self.quantus_name:
            raise CaapError("metric 'quantus' needs the Quantus metric's name: quantus:NAME, e.g. quantus:Sparseness")
        quantus = _quantus()
        try:  # options are checked now, not in the middle of a run
            self._instance = getattr(quantus, self.quantus_name)(disable_warnings=True, display_progressbar=False,
                                                                 **options)
        except TypeError as exc:
            raise CaapError(f"quantus:{self.quantus_name}: {exc}") from None

    def evaluate(self, model, images, targets, maps, masks) -> torch.Tensor:
        adapter = adapt(model)
        device = model_device(adapter.model)
        pixels = to_pixels(maps, tuple(images.shape[-2:]))[:, None].numpy()  # [B, 1, H, W]
        segments = None if masks is None else masks[:, None].float().numpy()
        with eval_mode(adapter.model):
            scores = self._instance(model=_Logits(adapter), x_batch=images.detach().cpu().float().numpy(),
                                    y_batch=targets.numpy(), a_batch=pixels, s_batch=segments,
                                    device=str(device), explain_func=_no_explain(self.quantus_name),
                                    batch_size=max(1, images.shape[0]))
        return torch.tensor([float(np.mean(np.asarray(s, dtype=np.float64))) for s in scores])
