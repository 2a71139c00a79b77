"""Grad-CAM on ViT tokens (Selvaraju et al. 2017), with the patch grid read from the adapter."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caap.errors import CaapError
from caap.methods.base import Explainer, Forward, Maps, forward_from_leaf, register, target_grad


@register
class GradCAM(Explainer):
    """Grad-CAM (Selvaraju et al. 2017) on the patch tokens of the input of block ``layer``.

    Activations ``A = z_layer[:, prefix:]`` reshaped to ``[B, D, gh, gw]`` from the adapter's grid (never a
    hard-coded one); weights are the spatial mean of ``∂ logit_c / ∂ A``; ``cam = relu(Σ_d w_d A_d)``. The
    default ``layer=-1`` (input of the last block) is the output of the second-to-last block: patch tokens
    of the last block's *output* do not reach a class-token head.
    """

    name = "gradcam"
    resolution = "patch"
    needs_grad = True
    signed = False

    def __init__(self, model, layer: int = -1, **kwargs) -> None:
        super().__init__(model, **kwargs)
        n = self.adapter.num_blocks
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise CaapError(f"layer {layer!r} is out of range for a model with {n} blocks")
        self.layer = layer % n

    def settings(self) -> dict:
        return {**super().settings(), "layer": self.layer}

    def _forward(self, images: torch.Tensor) -> Forward:
        """One differentiable forward; the activations entering block ``layer`` are kept as a leaf."""
        acts, logits = forward_from_leaf(self.adapter, images, self.layer)  # acts [B, N, D]
        return Forward(logits.detach(), (acts, logits))

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        acts, logits = forward.cache
        (grads,) = target_grad(logits, target, acts)
        p = self.adapter.num_prefix
        a = acts.detach()[:, p:].transpose(1, 2).reshape(len(images), -1, *grid)  # [B, D, gh, gw]
        g = grads[:, p:].transpose(1, 2).reshape(len(images), -1, *grid)
        return Maps(F.relu((g.mean((2, 3), keepdim=True) * a).sum(1)))  # [B, gh, gw]
