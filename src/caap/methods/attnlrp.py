"""AttnLRP (Achtibat et al., ICML 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers"), in its gradient × input form (as the authors' ``lxt.efficient``):

- linear layers and residual additions: epsilon rule, which gradient × input gives as it is;
- LayerNorm: identity rule on ``1/std`` (the std is a constant for autograd; the centring stays linear);
- element-wise activations (GELU): identity rule, ``∂ = act(x)/x``;
- softmax: Taylor decomposition at the input with bias, ``R_x = x ⊙ (R − s Σ R)``, which is its plain
  gradient × input;
- the two attention matmuls: uniform rule (each operand gets half), i.e. the gradients reaching ``v`` are
  halved and those reaching ``q`` and ``k`` quartered.

The map is ``Σ_d z_0 ⊙ ∂s_c/∂z_0`` at the patch tokens of the token embeddings ``z_0`` (patch embedding plus
position embedding), for the target's logit ``s_c``; its total is the logit minus the biases' share.

``attention="constant"`` is the rule AttnLRP's paper compares itself with, CP-LRP (Ali et al., ICML 2022: the
attention weights a constant, so nothing reaches the queries and keys and the values get the whole gradient); the
claim rows keep the authors' ``"uniform"``, the robustness table reads both. (CP-LRP on a ViT is LibraGrad's logit
variant, ``libragrad:softmax=false``: the same four rules.)
"""

from __future__ import annotations

import torch
from torch import nn

from caap.adapters.attention import layer_norm_detached
from caap.errors import CaapError, UnsupportedModelError
from caap.methods.base import Explainer, Forward, Maps, register, target_grad
from caap.methods.relevance import Rules, check_linear, embedded_forward


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``factor`` (the uniform rule)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


class _IdentityRule(torch.autograd.Function):
    """``fn(x)`` forward; gradient ``grad · fn(x) / x`` (relevance passes the element-wise function unchanged)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn) -> torch.Tensor:
        out = fn(x)
        ctx.save_for_backward(out / (x + 1e-10))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


class AttnLRPRules(Rules):
    """The AttnLRP rules as changes of the backward pass (see the module docstring)."""

    method = "attnlrp"  # the name an unsupported model's error gives

    def norm(self, module, x):
        if isinstance(module, nn.Identity):
            return x
        if not isinstance(module, nn.LayerNorm):
            raise UnsupportedModelError(f"{self.method} has no rule for the norm {type(module).__name__}; expected "
                                        "nn.LayerNorm")
        return layer_norm_detached(module, x)

    def act(self, fn, x):
        return _IdentityRule.apply(x, fn)

    def attention_inputs(self, q, k, v):
        return _ScaleGrad.apply(q, 0.25), _ScaleGrad.apply(k, 0.25), _ScaleGrad.apply(v, 0.5)


class ConstantAttentionRules(AttnLRPRules):
    """CP-LRP's attention rule in AttnLRP's frame: the attention weights a constant."""

    def attention_inputs(self, q, k, v):
        return q.detach(), k.detach(), v


ATTENTION_RULES = {"uniform": AttnLRPRules, "constant": ConstantAttentionRules}


@register
class AttnLRP(Explainer):
    """AttnLRP (Achtibat et al., ICML 2024) at the token embeddings (see the module docstring); signed.

    Args:
        attention: the rule of the attention's two matmuls: ``"uniform"`` (AttnLRP's) or ``"constant"`` (CP-LRP's).
    """

    name = "attnlrp"
    resolution = "patch"
    needs_grad = True
    needs_attention = True

    def __init__(self, model, attention: str = "uniform", **kwargs) -> None:
        super().__init__(model, **kwargs)
        if attention not in ATTENTION_RULES:
            raise CaapError(f"attention must be one of {', '.join(ATTENTION_RULES)}, got {attention!r}")
        check_linear(self.adapter)
        self.attention = attention

    def settings(self) -> dict:
        return {**super().settings(), "attention": self.attention}

    def _forward(self, images: torch.Tensor) -> Forward:
        z0, logits = embedded_forward(self.adapter, images, ATTENTION_RULES[self.attention]())  # [B, N, D], [B, C]
        return Forward(logits.detach(), (z0, logits))

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        z0, logits = forward.cache
        (grads,) = target_grad(logits, target, z0)
        relevance = (z0.detach() * grads).sum(-1)[:, self.adapter.num_prefix:]  # [B, gh*gw]
        return Maps(relevance.reshape(-1, *grid))
