"""caap: Causal Attribution via Activation Patching for Vision Transformers.

    import caap
    explainer = caap.CAAP(model, layers=range(4, 8), context="mean", score="logit")
    att = explainer.explain(images)          # images: normalised float [B, 3, H, W]
    att.scores                               # [B, gh, gw]: s(patched)[c] - s(context)[c]

Subpackages, one direction of imports (lowest first): ``caap.core`` (tensors only), ``caap.adapters`` (all
model knowledge), ``caap.methods`` and ``caap.metrics``, ``caap.data`` and ``caap.viz``, ``caap.bench``; the
CLI on top. ``caap.methods``, ``caap.metrics``, ``caap.viz``, ``caap.bench`` and ``caap.data`` are loaded on
first use.
"""

from __future__ import annotations

import importlib
import warnings

with warnings.catch_warnings():  # what torch & co. say at import about their own dependencies (torch: pynvml's
    warnings.simplefilter("ignore", FutureWarning)  # deprecation) is not caap's to print; caap's own warnings
    warnings.simplefilter("ignore", DeprecationWarning)  # come later, from calls, and are kept
    from caap.adapters import Adapter, GenericAdapter, HFViTAdapter, TimmViTAdapter, adapt
    from caap.core.attribution import Attribution
    from caap.core.contexts import Black, Blur, Context, Mean, Noise, Normalization
    from caap.errors import CaapError, UnsupportedModelError
    from caap.methods import CAAP, Explainer
    from caap.methods.caap import AdaptiveCAAP, CoarseToFine, Exact, Fast, FastCAAP, FastThenExact
    from caap.version import __version__

_SUBPACKAGES = ("adapters", "bench", "core", "data", "methods", "metrics", "viz")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"caap.{name}")
    raise AttributeError(f"module 'caap' has no attribute {name!r}")


__all__ = [
    "CAAP",
    "AdaptiveCAAP",
    "CoarseToFine",
    "Exact",
    "Fast",
    "FastCAAP",
    "FastThenExact",
    "Adapter",
    "Attribution",
    "Black",
    "Blur",
    "CaapError",
    "Context",
    "Explainer",
    "GenericAdapter",
    "HFViTAdapter",
    "Mean",
    "Noise",
    "Normalization",
    "TimmViTAdapter",
    "UnsupportedModelError",
    "__version__",
    "adapt",
]
