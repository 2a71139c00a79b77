"""Quantus interop: ``explain_func(method, **config)`` is the function Quantus calls to explain a batch.

    import quantus, caap.quantus
    scores = quantus.evaluate(
        metrics={"sparseness": quantus.Sparseness()},
        xai_methods={"caap": caap.quantus.explain_func("caap"), "gae": caap.quantus.explain_func("gae")},
        model=model, x_batch=x, y_batch=y, explain_func_kwargs={})

The other direction, Quantus metrics in ``caap bench``, is :mod:`caap.metrics.quantus` (``--metrics
quantus:Sparseness``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from caap.errors import CaapError
from caap.methods import METHODS


def explain_func(method: str | None = None, *, upsample: str = "bilinear",
                 **config: Any) -> Callable[..., np.ndarray]:
    """Quantus's ``explain_func`` for a caap method spec (``"caap"``, ``"caap:layers=4:8"``, ``"gae"``…).

    The returned function takes ``model, inputs, targets`` (``inputs`` ``[B, 3, H, W]`` normalised, numpy or
    torch; ``targets`` ``[B]``) and returns float32 numpy ``[B, 1, H, W]``: the maps at input resolution, patch
    maps upsampled with ``upsample`` (``"bilinear"`` or ``"nearest"``: patch-exact). ``method=None`` takes the
    method from the ``method`` keyword that ``quantus.evaluate`` passes (the key of ``xai_methods``). Other
    keywords Quantus passes (``device``…) are accepted; the model runs where it is.

    Inputs must be floating point (normalised as the model expects): integer images (uint8 pixels) are refused,
    not silently taken as normalised values. Targets must be integer class indices (integral floats such as
    ``3.0`` are accepted; ``1.7`` or strings are refused)."""
    if upsample not in ("bilinear", "nearest"):
        raise CaapError(f"upsample must be 'bilinear' or 'nearest', got {upsample!r}")
    if method is not None:
        METHODS.get(method)  # an unknown name fails here, not inside Quantus

    def explain(model, inputs, targets, **kwargs: Any) -> np.ndarray:
        spec = method if method is not None else kwargs.get("method")
        if not isinstance(spec, str):
            raise CaapError("caap.quantus.explain_func() without a method needs Quantus's method= keyword")
        explainer = METHODS.build(spec, model, **config)
        x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
        if not x.is_floating_point():
            raise CaapError(f"inputs have dtype {x.dtype}; expected float images normalised as the model expects "
                            "(apply the model's transform to uint8 pixels first)")
        x = x.to(explainer.device, torch.float32)
        return explainer.explain(x, target=class_indices(targets)).to_pixels(mode=upsample).numpy().astype(np.float32)

    explain.__name__ = f"caap_{method or 'method'}"
    return explain


def class_indices(targets) -> torch.Tensor:
    """Quantus's ``y_batch`` as int64 ``[B]``: integers, or floats that are whole numbers; anything else is refused
    naming the first bad value."""
    values = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets).reshape(-1)
    if values.dtype.kind in "iu":
        return torch.from_numpy(values.astype(np.int64))
    if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return torch.from_numpy(values.astype(np.int64))
    bad = next((v for v in values.tolist() if isinstance(v, bool) or not (
        isinstance(v, (int, float)) and float(v).is_integer())), values.tolist()[:1])
    raise CaapError(f"targets must be integer class indices, got {bad!r} (dtype {values.dtype})")
