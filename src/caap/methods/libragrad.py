"""LibraGrad (Mehri, Soleymani Baghshah & Pilehvar, CVPR 2025, "LibraGrad: Balancing Gradient Flow for Universally
Better Vision Transformer Attributions") applied to gradient × input, as the authors' code computes it
(github.com/NightMachinery/pytorch-image-models-libragrad-v1, ``timm/night/decomposition.py``, with the preset
``LibraGrad`` of github.com/NightMachinery/decompv-libragrad-v1, ``decompv/x/gbrand.py``).

LibraGrad leaves the forward pass alone and changes the backward pass so that gradient × input is complete in the
sense of FullGrad: the preset's gradient mode ``LX1`` and head mode ``S1`` are, on a ViT,

- LayerNorm: the variance is a constant for autograd (the centring stays linear);
- GELU (any ``x · gate(x)`` activation): the gate is a constant, so the gradient is ``act(x)/x``;
- attention: the queries and keys are constants (``fair_qkv``), so the gradient reaches the stream only through the
  values, the attention weights acting as fixed mixing weights;
- the head: the score is the target's softmax probability, its gradient taken through the softmax.

(Their patch-embedding rule, ``DS100``, acts below the token embeddings and does not reach this map; their rule for
gated MLPs, ``DU``, has no gate to act on in a plain ViT MLP.)

The map is their ``blocks__0__CAT_s:sum`` — ``Σ_d z_0 ⊙ ∂p_c/∂z_0`` at the patch tokens of the token embeddings
``z_0`` (patch embedding plus position embedding), the paper's "IxG" column with LibraGrad. ``softmax=False`` reads
the target's logit instead (their ablation ``WO-Head``). Signed.

Compared with :mod:`caap.methods.attnlrp`, which shares the norm and activation rules: AttnLRP lets the gradient
reach the queries and keys (a quarter each, the values half: its uniform rule for the two matmuls) and reads the
logit; LibraGrad stops it at the queries and keys, keeps the values' whole, and reads the probability.
"""

from __future__ import annotations

import torch

from caap.errors import CaapError
from caap.methods.attnlrp import ConstantAttentionRules
from caap.methods.base import Explainer, Forward, Maps, register, target_grad
from caap.methods.relevance import check_linear, embedded_forward


class LibraGradRules(ConstantAttentionRules):
    """The backward pass of LibraGrad's ``LX1`` gradient mode (module docstring): on a ViT the same four rules as
    CP-LRP's in AttnLRP's frame — LayerNorm's variance and the activation's gate constant (AttnLRP's identity
    rules), the attention's queries and keys constant."""

    method = "libragrad"


@register
class LibraGrad(Explainer):
    """LibraGrad with gradient × input at the token embeddings (module docstring); signed.

    Args:
        softmax: score the target's softmax probability (the authors' preset, ``S1``); False scores its logit.
    """

    name = "libragrad"
    resolution = "patch"
    needs_grad = True
    needs_attention = True

    def __init__(self, model, softmax: bool = True, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(softmax, bool):
            raise CaapError(f"softmax must be true or false, got {softmax!r}")
        check_linear(self.adapter)
        self.softmax = softmax

    def settings(self) -> dict:
        return {**super().settings(), "softmax": self.softmax}

    def _forward(self, images: torch.Tensor) -> Forward:
        z0, logits = embedded_forward(self.adapter, images, LibraGradRules())  # [B, N, D], [B, C]
        return Forward(logits.detach(), (z0, logits))

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        z0, logits = forward.cache
        with torch.enable_grad():
            scores = logits.float().softmax(-1) if self.softmax else logits
            (grads,) = target_grad(scores, target, z0)
        relevance = (z0.detach() * grads).sum(-1)[:, self.adapter.num_prefix:]  # [B, gh*gw]
        return Maps(relevance.reshape(-1, *grid))
