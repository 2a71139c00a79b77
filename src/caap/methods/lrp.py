"""Conservative-propagation LRP (Ali et al., ICML 2022): gradient × input with attention probabilities and
LayerNorm scales detached (the adapter's ``conservative`` context)."""

from __future__ import annotations

import torch

from caap.adapters.capabilities import LinearRules, require
from caap.core.state import model_lock
from caap.methods.base import Explainer, Forward, Maps, forward_from_leaf, register, target_grad


@register
class LRP(Explainer):
    """Conservative-propagation LRP (Ali et al., ICML 2022, "XAI for Transformers"): gradient × input at the
    token embeddings ``z_0`` with attention probabilities and LayerNorm scales treated as constants;
    ``R[p] = Σ_d z_0[p, d] ∂s_c/∂z_0[p, d]`` on the patch tokens. timm and Hugging Face (transformers >= 5)
    ViTs; other adapters raise :class:`~caap.errors.UnsupportedModelError` naming the missing capability."""

    name = "lrp"
    resolution = "patch"
    needs_grad = True
    needs_attention = True

    def __init__(self, model, **kwargs) -> None:
        super().__init__(model, **kwargs)
        rules = require(self.adapter, LinearRules)  # fail at construction if the adapter cannot
        with model_lock(self.model), rules.conservative():
            pass

    def _forward(self, images: torch.Tensor) -> Forward:
        with require(self.adapter, LinearRules).conservative():
            z0, logits = forward_from_leaf(self.adapter, images, 0)  # z0 [B, N, D]
        return Forward(logits.detach(), (z0, logits))

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        z0, logits = forward.cache
        (grads,) = target_grad(logits, target, z0)
        relevance = (z0.detach() * grads).sum(-1)[:, self.adapter.num_prefix :]  # [B, gh*gw]
        return Maps(relevance.reshape(-1, *grid))
