"""Attention-based baselines: raw attention, attention rollout, and Chefer et al.'s generic GAE.

Maps are read at the *query rows the head uses* (``adapter.head_rows``: the class token, or class and
distillation tokens averaged); for heads that pool every token (average or attention pooling) the rows of
all tokens are averaged. Columns are the patch tokens, so maps are ``[B, gh, gw]``.
"""

from __future__ import annotations

import torch

from caap.adapters.capabilities import AttentionCapture, require
from caap.errors import CaapError
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
        with require(self.adapter, AttentionCapture).capture_attention() as maps, torch.inference_mode():
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
        with require(self.adapter, AttentionCapture).capture_attention() as maps, torch.enable_grad():
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


@register
class Bidirectional(AttentionExplainer):
    """Bi-Attn (Chen, Li, Yu, Dou & Xiong, TMLR 2023, "Beyond Intuition: Rethinking Token Attributions inside
    Transformers"), as the MDA authors' code computes it (their input ordering):

    - from block ``start_layer`` on: ``R += (Σ_h w_h A_h) R`` with head weights ``w_h ∝ mean |A_hᵀ ∇A_h|``
      (normalised to sum 1 per image), ``R`` starting at ``I``; gradients of the target logit;
    - the last block's attention gradient averaged over the inputs ``α x``, ``α`` in ``linspace(0, 1, steps)``
      (integrated gradients of the attention, the origin included), positive part, mean over heads: ``W``;
    - the map is ``W ⊙ R`` at the head's query rows and the patch columns.

    Args:
        steps: inputs on the integration path (the authors' 20).
        start_layer: first block (0-indexed) of the rollout. The authors' ``start_layer=4`` skips blocks
            ``nb < start_layer - 1``, i.e. starts at block index 3; the default (None) is that index, or the last
            block of a model with fewer blocks.
    """

    name = "bidirectional"
    needs_grad = True

    def __init__(self, model, steps: int = 20, start_layer: int | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise CaapError(f"steps must be a positive int, got {steps!r}")
        blocks = self.adapter.num_blocks
        start_layer = min(3, blocks - 1) if start_layer is None else start_layer
        if isinstance(start_layer, bool) or not isinstance(start_layer, int) or not 0 <= start_layer < blocks:
            raise CaapError(f"start_layer must be a block index in [0, {blocks - 1}], got {start_layer!r}")
        self.steps, self.start_layer = steps, start_layer

    def settings(self) -> dict:
        return {**super().settings(), "steps": self.steps, "start_layer": self.start_layer}

    def _graph(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with require(self.adapter, AttentionCapture).capture_attention() as maps, torch.enable_grad():
            logits = self.adapter.forward(images.detach().requires_grad_(True))
            return logits, maps.get()

    def _forward(self, images: torch.Tensor) -> Forward:
        logits, attentions = self._graph(images)
        return Forward(logits.detach(), (logits, attentions, images))

    def _relevance(self, target, forward):
        logits, attentions, images = forward.cache
        attentions = attentions[self.start_layer:]
        grads = target_grad(logits, target, attentions)
        b, n = attentions[0].shape[0], attentions[0].shape[-1]
        r = torch.eye(n, device=logits.device).expand(b, n, n).clone()
        for a, g in zip(attentions, grads, strict=True):
            a, g = a.detach().float(), g.float()
            weight = (a.transpose(-1, -2) @ g).abs().mean((-1, -2))  # [B, heads]
            weight = weight / weight.sum(-1, keepdim=True)
            r = r + (weight[:, :, None, None] * a).sum(1) @ r
        path = torch.zeros_like(attentions[-1], dtype=torch.float32)  # [B, heads, N, N]
        for alpha in torch.linspace(0, 1, self.steps).tolist():
            scaled_logits, scaled = self._graph(images * alpha)
            path += target_grad(scaled_logits, target, scaled[-1])[0].float()
        return ((path / self.steps).clamp(min=0).mean(1) * r).detach()
