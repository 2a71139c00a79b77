"""``adapt(model)``: the adapter that fits a model (an Adapter is returned as it is)."""

from __future__ import annotations

from torch import nn

from caap.adapters.base import Adapter
from caap.adapters.classifier import ClassifierAdapter
from caap.adapters.eva import TimmEvaAdapter, is_timm_eva
from caap.adapters.hf import HFViTAdapter, is_hf_classifier
from caap.adapters.timm import TimmViTAdapter, is_timm_vit
from caap.core.contexts import Normalization
from caap.errors import UnsupportedModelError


def adapt(model: nn.Module | Adapter, normalization: Normalization | None = None) -> Adapter:
    """Return an adapter for ``model``: an :class:`Adapter` as is (a copy with ``normalization`` when one is given:
    the caller's adapter is never changed), a timm ViT, a Hugging Face ViT, or for any other classifier a
    :class:`ClassifierAdapter` (the model-agnostic methods only; the others raise one line naming the ViT
    capability it lacks)."""
    if isinstance(model, Adapter):
        return model if normalization is None else model.with_normalization(normalization)
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch nn.Module or a caap Adapter, got {type(model).__name__}")
    if is_timm_vit(model):
        return TimmViTAdapter(model, normalization)
    if is_hf_classifier(model):
        return HFViTAdapter(model, normalization)
    if is_timm_eva(model):
        return TimmEvaAdapter(model, normalization)
    return ClassifierAdapter(model, normalization=normalization)  # any other classifier: model-agnostic methods
