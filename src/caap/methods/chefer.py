"""Transformer attribution (Chefer, Gur & Wolf, CVPR 2021, "Transformer Interpretability Beyond Attention
Visualization"): LRP relevance of every attention map, weighted by its gradient, positive part, averaged over
heads and rolled out over the blocks.

The rules are those of the authors' code (``modules/layers_ours.py``, ``ViT_LRP.py``):

- relevance starts as the one-hot vector of the target (1, not the logit) at the classifier;
- linear layers: alpha-beta with alpha = 1, beta = 0 (biases ignored), layer scale as a diagonal linear layer;
- LayerNorm, GELU, softmax, dropout: identity; class-token pooling puts the relevance on token 0 (average
  pooling, which the authors' code lacks, uses the z-rule of the mean; a distilled head's two classifiers
  split the relevance by the residual rule below);
- residual additions: z-rule split, each branch rescaled so that its total is its share
  ``|Σa| / (|Σa| + |Σb|)`` of the incoming total (per image); a cloned tensor sums its branches' relevance;
- both attention matmuls (``q kᵀ`` and ``A v``): z-rule on both operands, each operand's relevance halved;
  ``R_A`` is the relevance of ``A`` after the ``A v`` split;
- per block ``Ā = E_h[(∇A ⊙ R_A)⁺]`` with ``∇A`` the gradient of the target logit; the map is row ``head
  rows`` of ``(Ā_{L-1} + I) ⋯ (Ā_start + I)`` (no row normalisation) at the patch columns.

Batched: every image's relevance is its own (the residual rescaling sums per image, not over the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caap.adapters.capabilities import LinearRules, require
from caap.errors import CaapError
from caap.methods.base import Explainer, Forward, Maps, register, target_grad
from caap.methods.relevance import check_linear, linear_forward


def safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / (b + 1e-9)``, and 0 where ``b == 0`` (the authors' stabiliser)."""
    den = b + 1e-9
    den = torch.where(den == 0, torch.full_like(den, 1e-9), den)
    return torch.where(b != 0, a / den, torch.zeros_like(den))


def linear_rule(relevance: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Alpha-beta rule (alpha 1, beta 0) for ``x @ weightᵀ``: ``R`` ``[..., out]`` -> ``[..., in]``."""
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    s = safe_divide(relevance, F.linear(xp, wp) + F.linear(xn, wn))
    return xp * (s @ wp) + xn * (s @ wn)


def scale_rule(relevance: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
    """The same rule for ``x * gamma`` (layer scale, a diagonal weight); identity when ``gamma`` is None."""
    if gamma is None:
        return relevance
    z = x.clamp(min=0) * gamma.clamp(min=0) + x.clamp(max=0) * gamma.clamp(max=0)
    return z * safe_divide(relevance, z)


def add_rule(relevance: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual ``a + b``: z-rule split, each branch rescaled to its share of the total (per image)."""
    s = safe_divide(relevance, a + b)
    ra, rb = a * s, b * s
    dims = tuple(range(1, relevance.dim()))
    sa, sb, total = ra.sum(dims, keepdim=True), rb.sum(dims, keepdim=True), relevance.sum(dims, keepdim=True)
    norm = sa.abs() + sb.abs()
    fa, fb = safe_divide(sa.abs(), norm) * total, safe_divide(sb.abs(), norm) * total
    return ra * safe_divide(fa, sa), rb * safe_divide(fb, sb)


def clone_rule(x: torch.Tensor, *relevances: torch.Tensor) -> torch.Tensor:
    """A tensor used twice: its relevance is the sum of its uses' (through the authors' stabiliser)."""
    return x * sum(safe_divide(r, x) for r in relevances)


def matmul_rule(relevance: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z-rule for ``a @ b`` on both operands, each operand's relevance halved."""
    s = safe_divide(relevance, a @ b)
    return a * (s @ b.transpose(-2, -1)) / 2, b * (a.transpose(-2, -1) @ s) / 2


@register
class TransformerAttribution(Explainer):
    """Chefer et al. (CVPR 2021) transformer attribution (see the module docstring).

    Args:
        start_layer: first block of the rollout (0 as in the authors' notebooks; their evaluation script
            uses 1).
    """

    name = "transformer_attribution"
    resolution = "patch"
    needs_grad = True
    needs_attention = True
    signed = False

    def __init__(self, model, start_layer: int = 0, **kwargs) -> None:
        super().__init__(model, **kwargs)
        check_linear(self.adapter)
        depth = self.adapter.num_blocks
        if isinstance(start_layer, bool) or not isinstance(start_layer, int) or not 0 <= start_layer < depth:
            raise CaapError(f"start_layer must be an int in [0, {depth - 1}] (the model's blocks), got {start_layer!r}")
        self.start_layer = start_layer

    def settings(self) -> dict:
        return {**super().settings(), "start_layer": self.start_layer}

    def _forward(self, images: torch.Tensor) -> Forward:
        records: list[dict] = []
        with torch.enable_grad():
            z0 = self.adapter.embed(images).detach().requires_grad_(True)  # a graph through every A
            logits = linear_forward(self.adapter, z0, records=records)
        return Forward(logits.detach(), (logits, records))

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        logits, records = forward.cache
        blocks, head = records[:-1], records[-1]
        grads = target_grad(logits, target, [r["attn"] for r in blocks])  # d logit / d A, [B, H, N, N] each
        with torch.no_grad():
            relevance_a = self._relprop(logits, target, blocks, head)
            n = relevance_a[0].shape[-1]
            eye = torch.eye(n, device=logits.device)
            joint = None
            for layer in range(self.start_layer, len(blocks)):
                cam = (grads[layer] * relevance_a[layer]).clamp(min=0).mean(1).float() + eye  # [B, N, N]
                joint = cam if joint is None else cam @ joint
            rows = list(self.adapter.head_rows or range(n))
            patch = joint[:, rows, self.adapter.num_prefix:].mean(1)  # [B, gh*gw]
        return Maps(patch.reshape(-1, *grid))

    def _relprop(self, logits, target, blocks, head) -> list[torch.Tensor]:
        """Relevance of every block's attention probabilities ``R_A`` ``[B, H, N, N]``, in block order."""
        adapter = self.adapter
        linear_head = require(adapter, LinearRules).linear_head()
        one_hot = F.one_hot(target.to(logits.device), logits.shape[-1]).to(logits.dtype)  # [B, C]
        seq, feat = head["seq"], head["feat"]
        r_seq = torch.zeros_like(seq)
        width = seq.shape[-1]
        if linear_head.pool == "distilled":  # (a + b) / 2: the residual rule on the two heads' outputs
            a, b = linear_head.classifier(feat[:, 0]), linear_head.classifier_dist(feat[:, 1])
            r_a, r_b = add_rule(one_hot, a, b)
            r_seq[:, 0] = linear_rule(r_a, feat[:, 0], linear_head.classifier.weight)
            r_seq[:, 1] = linear_rule(r_b, feat[:, 1], linear_head.classifier_dist.weight)
            return self._blocks_relprop(r_seq, blocks)
        r = linear_rule(one_hot, feat, linear_head.classifier.weight)  # fc_norm: identity
        if linear_head.pool in ("token", "token+mean"):
            r_seq[:, 0] = r[:, :width]
        if linear_head.pool in ("mean", "token+mean"):
            patches = seq[:, adapter.num_prefix:]  # z-rule of the mean: each token's share of the pooled value
            pooled = patches.mean(1, keepdim=True)
            r_seq[:, adapter.num_prefix:] = patches / patches.shape[1] * safe_divide(r[:, None, -width:], pooled)
        return self._blocks_relprop(r_seq, blocks)  # final norm: identity

    def _blocks_relprop(self, r: torch.Tensor, blocks: list[dict]) -> list[torch.Tensor]:
        """From the relevance of the last block's output ``[B, N, D]`` down through every block."""
        adapter = self.adapter
        relevance_a: list[torch.Tensor] = [None] * len(blocks)  # type: ignore[list-item]
        for index in reversed(range(len(blocks))):
            rec, layers = blocks[index], require(adapter, LinearRules).linear_block(index)
            r_h, r_s2 = add_rule(r, rec["h"], rec["s2"])
            r_m = scale_rule(r_s2, rec["m"], layers.ls2)
            r_y2 = linear_rule(linear_rule(r_m, rec["g"], layers.fc2.weight), rec["y2"], layers.fc1.weight)
            r = clone_rule(rec["h"], r_h, r_y2)  # act and norm2: identity
            r_x, r_s1 = add_rule(r, rec["x"], rec["s1"])
            r_o = linear_rule(scale_rule(r_s1, rec["p"], layers.ls1), rec["o_flat"], layers.proj.weight)
            r_o = r_o.unflatten(-1, (layers.view.heads, -1)).transpose(1, 2)  # [B, H, N, hd]
            r_attn, r_v = matmul_rule(r_o, rec["attn"], rec["v"])
            relevance_a[index] = r_attn
            r_q, r_k = matmul_rule(r_attn, rec["q"], rec["k"].transpose(-2, -1))  # softmax: identity
            r_k = r_k.transpose(-2, -1)
            r_y1 = self._qkv_rule(layers, rec["y1"], r_q, r_k, r_v)
            r = clone_rule(rec["x"], r_x, r_y1)  # norm1: identity
        return relevance_a

    @staticmethod
    def _qkv_rule(layers, y1, r_q, r_k, r_v) -> torch.Tensor:
        """Relevance of the q/k/v projections' input from that of ``q, k, v`` ``[B, H, N, hd]``."""
        parts = [t.transpose(1, 2).flatten(2) for t in (r_q, r_k, r_v)]  # [B, N, H*hd] each
        if len(layers.qkv) == 1:
            return linear_rule(torch.cat(parts, -1), y1, layers.qkv[0].weight)
        return sum(linear_rule(p, y1, layer.weight) for p, layer in zip(parts, layers.qkv, strict=True))
