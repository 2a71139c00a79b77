"""Attention-based baselines: raw attention, attention rollout, and Chefer et al.'s generic GAE.

Maps are read at the *query rows the head uses* (``adapter.head_rows``: the class token, or class and
distillation tokens averaged); for heads that pool every token (average or attention pooling) the rows of
all tokens are averaged. Columns are the patch tokens, so maps are ``[B, gh, gw]``.
"""

from __future__ import annotations

import torch

from caap.adapters.attention import capture_attention
from caap.core.attribution import Attribution
from caap.core.targets import TargetLike, resolve_target
from caap.methods.base import Explainer
from caap.methods.registry import register


class AttentionExplainer(Explainer):
    """Base: runs the model with attention capture; a subclass combines the maps into a token relevance
    matrix ``R`` ``[B, N, N]`` whose head-row, patch-column block is the map."""

    resolution = "patch"
    needs_attention = True
    signed = False

    def _rows(self, n_tokens: int) -> list[int]:
        rows = self.adapter.head_rows
        return list(rows) if rows else list(range(n_tokens))

    def _explain(self, images, target: TargetLike, *, grid, device, **kwargs) -> Attribution:
        with capture_attention(self.adapter) as maps:
            relevance, tgt = self._relevance(images, target, maps)  # [B, N, N]
        rows = self._rows(relevance.shape[-1])
        patch = relevance[:, rows, self.adapter.num_prefix :].mean(1)  # [B, gh*gw]
        scores = patch.reshape(-1, *grid).detach().float().cpu()
        return Attribution(scores, tgt, tuple(images.shape[-2:]), self.name, meta={"method": self.name})

    @torch.inference_mode()
    def _relevance(self, images, target, maps):
        """One forward with capture; ``combine`` turns the per-block maps into ``R`` ``[B, N, N]``."""
        maps.clear()
        tgt = resolve_target(target, self.adapter.forward(images))
        return self.combine(maps.get()), tgt

    def combine(self, attentions: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


@register
class RawAttention(AttentionExplainer):
    """Last block's attention from the head's query rows to the patches, mean over heads."""

    name = "raw_attention"

    def combine(self, attentions):
        return attentions[-1].float().mean(1)  # [B, N, N]


def rollout(attentions: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): ``Â_l = r I + (1 - r) mean_h A_l`` with rows renormalised,
    ``R = Â_{L-1} … Â_0``; ``[B, N, N]``."""
    result = None
    for a in attentions:
        a = a.float().mean(1)  # [B, N, N]
        eye = torch.eye(a.shape[-1], device=a.device).expand_as(a)
        a = residual * eye + (1 - residual) * a
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    return result


@register
class Rollout(AttentionExplainer):
    """Attention rollout, heads averaged, ``0.5 I + 0.5 A`` with normalised rows."""

    name = "rollout"

    def combine(self, attentions):
        return rollout(attentions)


@register
class GAE(AttentionExplainer):
    """Chefer, Gur & Wolf (ICCV 2021), "Generic Attention-model Explainability" for self-attention:
    ``R = I``; for each block ``R += E_h[(∇A ⊙ A)^+] R``, gradients of the target logit."""

    name = "gae"
    needs_grad = True

    def _relevance(self, images, target, maps):
        with torch.no_grad():
            tgt = resolve_target(target, self.adapter.forward(images))
        with torch.enable_grad():
            maps.clear()
            x = images.detach().requires_grad_(True)  # a graph through the attention maps
            logits = self.adapter.forward(x)
            attentions = maps.get()
            grads = torch.autograd.grad(logits.gather(1, tgt.to(x.device)[:, None]).sum(), attentions)
        n = attentions[0].shape[-1]
        r = torch.eye(n, device=images.device).expand(images.shape[0], n, n).clone()
        for a, g in zip(attentions, grads, strict=True):
            cam = (g * a).clamp(min=0).mean(1).float()  # [B, N, N]
            r = r + cam @ r
        return r.detach(), tgt
