"""Attention-based baselines: raw attention, attention rollout, and Chefer et al.'s generic GAE.

Maps are read at the *query rows the head uses* (``adapter.head_rows``: the class token, or class and
distillation tokens averaged); for heads that pool every token (average or attention pooling) the rows of
all tokens are averaged. Columns are the patch tokens, so maps are ``[B, gh, gw]``.
"""

from __future__ import annotations

import torch

from caap.methods.base import Explainer, Forward, Maps, register, target_grad


class AttentionExplainer(Explainer):
    """Base: one forward with attention capture (it also resolves the target); a subclass combines the maps
    into a token relevance matrix ``R`` ``[B, N, N]`` whose head-row, patch-column block is the map."""

    resolution = "patch"
    needs_attention = True
    signed = False

    def _rows(self, n_tokens: int) -> list[int]:
        rows = self.adapter.head_rows
        return list(rows) if rows else list(range(n_tokens))

    def _forward(self, images: torch.Tensor) -> Forward:
        with self.adapter.capture_attention() as maps, torch.inference_mode():
            logits = self.adapter.forward(images)
            return Forward(logits, maps.get())

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        relevance = self._relevance(target, forward)  # [B, N, N]
        rows = self._rows(relevance.shape[-1])
        patch = relevance[:, rows, self.adapter.num_prefix :].mean(1)  # [B, gh*gw]
        return Maps(patch.reshape(-1, *grid))

    def _relevance(self, target: torch.Tensor, forward: Forward) -> torch.Tensor:
        with torch.inference_mode():
            return self.combine(forward.cache)

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

    def _forward(self, images: torch.Tensor) -> Forward:
        with self.adapter.capture_attention() as maps, torch.enable_grad():
            x = images.detach().requires_grad_(True)  # a graph through the attention maps
            logits = self.adapter.forward(x)
            return Forward(logits.detach(), (logits, maps.get()))

    def _relevance(self, target, forward):
        logits, attentions = forward.cache
        grads = target_grad(logits, target, attentions)
        b, n = attentions[0].shape[0], attentions[0].shape[-1]
        r = torch.eye(n, device=logits.device).expand(b, n, n).clone()
        for a, g in zip(attentions, grads, strict=True):
            cam = (g * a).clamp(min=0).mean(1).float()  # [B, N, N]
            r = r + cam @ r
        return r.detach()
