"""CAAP's fast mode: the patched tokens exact, the other tokens to first order (docs/FAST.md).

Notation of DESIGN §1; ``a = min(layers)``; ``S`` the tokens of one patch group (one patch by default).
One context run from block ``a`` (all tokens, kept with its autograd graph) and its backward pass give
``G_l = ∂s_c/∂o_l``, the score's gradient w.r.t. every block's attention output per head. Then, for every
group at once:

1. **The group's own tokens, exactly.** Their residual stream ``y_l`` is overwritten with the source's at
   the patched blocks and otherwise runs through each block with every other token's input frozen at the
   context run: their queries attend to the context keys/values with their own keys/values replaced.
2. **The other tokens' attention, exact softmax.** For every other token ``q`` (prefix tokens included)
   with its context query, the attention output after the group's keys and values change, renormalised
   exactly: with ``A`` the context probabilities, ``β_qj = exp(q_q·k'_j·scale − lse_q)``,
   ``Δo_q = [Σ_j A_qj (o_q − v_j) + Σ_j β_qj (v'_j − o_q)] / (1 + Σ_j (β_qj − A_qj))``.
3. **Downstream, to first order**: ``A[S] ≈ Σ_{l ≥ a} Σ_{q ∉ S} ⟨G_l[q], Δo_l[q]⟩`` plus, for heads that read
   patch tokens (average or attention pooling), the head's exact response to the group's final states.

Only ``⟨G, Δo⟩`` is needed, so step 2 works on ``[H, N, P]`` matrices (query × patched token) per image
and layer, never on an ``N × N × P`` tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from caap.adapters import Adapter
from caap.adapters.views import BlockView
from caap.core.groups import Variants
from caap.core.scores import ScoreFn, apply_score
from caap.core.state import autocast


@dataclass
class _Layer:
    """The context run at one block, per image: queries (scaled), keys, values ``[B, H, N, hd]``, attention
    probabilities ``[B, H, N, N]``, their log-normalisers ``[B, H, N]`` and outputs ``o`` ``[B, H, N, hd]``."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    probs: torch.Tensor
    lse: torch.Tensor
    o: torch.Tensor


def fast_scores(adapter: Adapter, layers: list[int], score_fn: ScoreFn, source: dict[int, torch.Tensor],
                context_prefix: torch.Tensor, target: torch.Tensor, variants: Variants, classes: int | None,
                dtype: torch.dtype | None) -> torch.Tensor:
    """Fast CAAP scores per variant: ``[V]`` for each image's ``target``, or ``[V, K]`` for every class when
    ``classes`` is the number of classes ``K`` (one backward pass per class).

    ``source``: the source run's block inputs ``{l: [B, N, D]}`` at the patched blocks; ``context_prefix``:
    the context run entering block ``min(layers)``, ``[B, N, D]``."""
    device = context_prefix.device
    first = layers[0]
    views = {index: adapter.block_view(index) for index in range(first, adapter.num_blocks)}
    img = variants.image.to(device)[variants.pair_variant.to(device)]  # [P] image of each patched token
    tok = variants.pair_token.to(device)  # [P]
    var = variants.pair_variant.to(device)  # [P]
    with torch.enable_grad(), autocast(device, dtype):
        ctx, outs, final, logits = _context_pass(adapter, views, context_prefix.clone())
        scores = apply_score(score_fn, logits)  # [B, K]
    with torch.no_grad(), autocast(device, dtype):
        keys, values, y_final = _token_paths(views, layers, source, ctx, img, tok, var)
        head = _head_term(adapter, score_fn, final.detach(), scores.detach(), y_final, variants, img, tok)
    rows = list(range(classes)) if classes is not None else [None]
    out = []
    for c in rows:
        picked = scores[:, c] if c is not None else scores.gather(1, target.to(device)[:, None])[:, 0]
        grads = torch.autograd.grad(picked.sum(), outs, retain_graph=c is not None and c < classes - 1)
        total = torch.zeros(len(variants), device=device)
        for layer, g, k_new, v_new in zip(ctx, grads, keys, values, strict=True):
            total += _first_order(layer, g.float(), k_new, v_new, img, tok, var, len(variants))
        out.append(total)
    first_order = torch.stack(out, 1) if classes is not None else out[0]  # [V, K] or [V]
    if head is None:
        return first_order
    if classes is not None:
        return first_order + head
    return first_order + head.gather(1, target.to(device)[variants.image.to(device), None])[:, 0]


def _context_pass(adapter: Adapter, views: dict[int, BlockView], z: torch.Tensor):
    """The context run from block ``min(views)`` with every attention output ``o_l`` in the graph."""
    ctx, outs = [], []
    for view in views.values():
        q, k, v = (t.transpose(-3, -2) for t in view.project(z))  # [B, H, N, hd]
        logits = (q * view.scale) @ k.transpose(-1, -2)  # [B, H, N, N]
        lse = torch.logsumexp(logits.float(), -1)  # [B, H, N]
        probs = (logits.float() - lse[..., None]).exp()
        o = probs.to(v.dtype) @ v  # [B, H, N, hd]
        outs.append(o)
        ctx.append(_Layer((q * view.scale).detach().float(), k.detach().float(), v.detach().float(),
                          probs.detach(), lse.detach(), o.detach().float()))
        z = view.finish(z, o.transpose(-3, -2))  # [B, N, D]
    return ctx, outs, z, adapter.head(z)


def _token_paths(views: dict[int, BlockView], layers: list[int], source: dict[int, torch.Tensor],
                 ctx: list[_Layer], img: torch.Tensor, tok: torch.Tensor, var: torch.Tensor):
    """Step 1: each group's own tokens through every block from ``min(layers)``, the other tokens frozen at
    the context. Returns the new keys and values per block ``[P, H, hd]`` and the final states ``[P, D]``."""
    same_i, same_j = _within(var)  # pairs (i, j) of patched tokens of one group (so of one image)
    keys, values = [], []
    y = None
    for (index, view), layer in zip(views.items(), ctx, strict=True):
        if index in layers:
            y = source[index][img, tok]  # [P, D] the overwrite
        q, k, v = (t.float() for t in view.project(y))  # [P, H, hd]
        keys.append(k)
        values.append(v)
        q = q * view.scale
        o = torch.empty_like(q)
        for b, lo, hi in _per_image(img):
            mine = (same_i >= lo) & (same_i < hi)
            i, j = same_i[mine], same_j[mine]
            scores = q[lo:hi].transpose(0, 1) @ layer.k[b].transpose(-1, -2)  # [H, Pb, N] vs the context keys
            scores[:, i - lo, tok[j]] = (q[i] * k[j]).sum(-1).T  # the group's own keys are its new ones
            probs = scores.softmax(-1)
            ob = probs @ layer.v[b]  # [H, Pb, hd]
            swap = probs[:, i - lo, tok[j]][..., None] * (v[j] - layer.v[b][:, tok[j]].transpose(0, 1)).transpose(0, 1)
            o[lo:hi] = ob.index_add(1, i - lo, swap).transpose(0, 1)  # [Pb, H, hd]
        y = view.finish(y, o.to(y.dtype))
    return keys, values, y


def _per_image(img: torch.Tensor):
    """``(b, start, stop)``: the patched tokens of image ``b`` are ``start:stop`` (variants are sorted by image)."""
    bounds = torch.cumsum(torch.bincount(img), 0).tolist()
    start = 0
    for b, stop in enumerate(bounds):
        if stop > start:
            yield b, start, stop
        start = stop


def _within(var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs ``(i, j)`` of patched tokens in the same group (``var`` sorted, ``[P]``)."""
    counts = torch.bincount(var)
    if bool((counts[var] == 1).all()):
        every = torch.arange(var.shape[0], device=var.device)
        return every, every
    starts = torch.cumsum(counts, 0) - counts
    size = counts[var]  # [P] group size of each token
    i = torch.repeat_interleave(torch.arange(var.shape[0], device=var.device), size)
    offset = torch.arange(int(size.sum()), device=var.device) - torch.repeat_interleave(
        torch.cumsum(size, 0) - size, size)
    return i, starts[var[i]] + offset


def _first_order(layer: _Layer, g: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, img: torch.Tensor,
                 tok: torch.Tensor, var: torch.Tensor, n_var: int) -> torch.Tensor:
    """Step 2 at one block: ``Σ_{q ∉ S} ⟨G[q], Δo[q]⟩`` for every group, ``[V]``."""
    out = torch.zeros(n_var, device=g.device)
    g_o = (g * layer.o).sum(-1)  # [B, H, N]
    for b, lo, hi in _per_image(img):
        sel = slice(lo, hi)  # the patched tokens of image b
        t, vb = tok[sel], var[sel]
        local = vb - vb.min()  # [Pb] group index within the image
        n_local = int(local.max()) + 1
        a = layer.probs[b][:, :, t]  # [H, N, Pb] context probability of each patched key
        shift = layer.q[b] @ k_new[sel].permute(1, 2, 0) - layer.lse[b][..., None]  # [H, N, Pb] log β
        gv_old = (g[b] @ layer.v[b].transpose(-1, -2))[:, :, t]  # [H, N, Pb] ⟨G_q, v_j⟩
        gv_new = g[b] @ v_new[sel].permute(1, 2, 0)  # [H, N, Pb] ⟨G_q, v'_j⟩
        m = torch.zeros(*shift.shape[:2], n_local, device=g.device)
        m = m.scatter_reduce(2, local.expand_as(shift), shift, "amax", include_self=True)  # [H, N, G] ≥ 0
        mj = m[:, :, local]  # [H, N, Pb]
        beta, a_s = (shift - mj).exp(), a * (-mj).exp()
        go = g_o[b][..., None]  # [H, N, 1]
        num = torch.zeros_like(m).index_add_(2, local, a_s * (go - gv_old) + beta * (gv_new - go))
        den = (-m).exp().index_add_(2, local, beta - a_s)  # [H, N, G]
        contrib = num / den  # [H, N, G]
        contrib[:, t, local] = 0  # a group's own tokens are exact (step 1), not first order
        out.index_add_(0, torch.arange(n_local, device=g.device) + vb.min(), contrib.sum((0, 1)))
    return out


def _head_term(adapter: Adapter, score_fn: ScoreFn, final: torch.Tensor, scores: torch.Tensor, y: torch.Tensor,
               variants: Variants, img: torch.Tensor, tok: torch.Tensor) -> torch.Tensor | None:
    """``score(head(context with the group's final states)) − score(head(context))`` per group ``[V, K]``,
    exact; ``None`` when the head reads only prefix rows (then a patch's final state does not reach it)."""
    rows = adapter.head_rows
    if rows is not None and all(r < adapter.num_prefix for r in rows):
        return None
    var_img = variants.image.to(final.device)
    z = final[var_img].clone()  # [V, N, D]
    z[variants.pair_variant.to(final.device), tok] = y.to(z.dtype)
    return apply_score(score_fn, adapter.head(z)) - scores[var_img]
