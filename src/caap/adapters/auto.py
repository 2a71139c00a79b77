"""``adapt(model)``: the adapter that fits a model (an Adapter is returned as it is)."""

from __future__ import annotations

from torch import nn

from caap.adapters.base import Adapter
from caap.adapters.card import ModelCard
from caap.adapters.classifier import ClassifierAdapter
from caap.adapters.composed import composed
from caap.adapters.eva import TimmEvaAdapter, is_timm_eva
from caap.adapters.hf import HFViTAdapter, is_hf_classifier
from caap.adapters.hfclip import HFImageTowerAdapter, is_hf_image_tower
from caap.adapters.openclip import OpenCLIPAdapter, is_open_clip_model, is_open_clip_timm, is_open_clip_vit
from caap.adapters.timm import TimmViTAdapter, is_timm_vit
from caap.adapters.timm_families import is_timm_family, timm_family_adapter
from caap.adapters.zeroshot import is_zero_shot
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
    if is_timm_family(model):
        return timm_family_adapter(model, normalization)
    tower = image_tower(model, normalization)
    if tower is not None:
        return tower
    return ClassifierAdapter(model, normalization=normalization)  # any other classifier: model-agnostic methods


def image_tower(model: nn.Module, normalization: Normalization | None = None) -> Adapter | None:
    """The adapter of an image-text model's image tower (open_clip, Hugging Face CLIP / SigLIP; a whole
    image-text model as its image encoder) or of a zero-shot classifier built on one; None for anything else."""
    if is_open_clip_vit(model):
        return OpenCLIPAdapter(model, normalization)
    if is_open_clip_timm(model):
        trunk = TimmViTAdapter(model.trunk, normalization) if is_timm_vit(model.trunk) else adapt(model.trunk)
        return composed(trunk, model, model.head, ModelCard(None, None, trunk.card.input_size), normalization)
    if is_open_clip_model(model):
        return adapt(model.visual, normalization)
    if is_hf_image_tower(model):
        return HFImageTowerAdapter(model, normalization)
    if is_zero_shot(model):
        inner = adapt(model.tower, normalization)
        card = ModelCard(tuple(model.names), len(model.names), inner.card.input_size)
        return composed(inner, model, model.logits, card, normalization)
    return None
