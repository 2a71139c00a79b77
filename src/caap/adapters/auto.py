"""``adapt(model)``: the adapter that fits a model (an Adapter is returned as it is)."""

from __future__ import annotations

from torch import nn

from caap.adapters.base import Adapter
from caap.adapters.hf import HF_MODELS, HFViTAdapter, is_hf_classifier
from caap.adapters.timm import TimmViTAdapter, is_timm_vit
from caap.core.contexts import Normalization
from caap.errors import UnsupportedModelError


def adapt(model: nn.Module | Adapter, normalization: Normalization | None = None) -> Adapter:
    """Return an adapter for ``model``: an :class:`Adapter` as is, a timm ViT or a Hugging Face ViT."""
    if isinstance(model, Adapter):
        if normalization is not None:
            model.normalization = normalization
        return model
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch nn.Module or a caap Adapter, got {type(model).__name__}")
    if is_timm_vit(model):
        return TimmViTAdapter(model, normalization)
    if is_hf_classifier(model):
        return HFViTAdapter(model, normalization)
    missing = [a for a in ("patch_embed", "blocks", "num_prefix_tokens", "forward_head") if not hasattr(model, a)]
    raise UnsupportedModelError(
        f"model of type {type(model).__name__} is not supported: it is neither a timm VisionTransformer "
        f"nor a Hugging Face {'/'.join(sorted(HF_MODELS))}"
        + (f" (it lacks {', '.join(missing)})" if missing else "")
        + "; wrap it in caap.adapters.GenericAdapter(model, embed, blocks, head, num_prefix, grid)"
    )
