"""caap: Causal Attribution via Activation Patching for Vision Transformers.

    import caap
    explainer = caap.CAAP(model, layers=range(4, 8), context="mean", score="logit")
    att = explainer.explain(images)          # images: normalised float [B, 3, H, W]
    att.scores                               # [B, gh, gw]: s(patched)[c] - s(context)[c]
"""

from caap.adapters import Adapter, GenericAdapter, HFViTAdapter, TimmViTAdapter, adapt
from caap.core.attribution import Attribution
from caap.core.contexts import Black, Blur, Context, Mean, Noise, Normalization
from caap.core.engine import CAAP
from caap.errors import CaapError, UnsupportedModelError
from caap.methods.base import Explainer

__version__ = "0.1.0"

__all__ = [
    "CAAP",
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
    "adapt",
]
