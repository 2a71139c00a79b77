"""CAAP's fast mode: the patched tokens exact, the other tokens to first order (docs/FAST.md).

Notation of docs/METHOD.md; ``a = min(layers)``; ``S`` the tokens of one patch group (one patch by default).
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
from caap.adapters.capabilities import BlockViews, require
from caap.adapters.views import BlockView
from caap.core.groups import Variants
from caap.core.scores import ScoreFn, apply_score
from caap.core.state import autocast
from caap.methods.caap.runs import Runs, Setting
from caap.methods.caap.strategies import Effects, Strategy


@dataclass
class ContextLayer:
    """The context run at one block, per image: queries (scaled), keys, values ``[B, H, N, hd]``, attention
    probabilities ``[B, H, N, N]``, their log-normalisers ``[B, H, N]`` and outputs ``o`` ``[B, H, N, hd]``."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    probs: torch.Tensor
    lse: torch.Tensor
    o: torch.Tensor


@dataclass
class Groups:
    """The patched tokens of a set of images that share one group layout: ``tok`` ``[Pb]`` (token index of
    each patched token), ``local`` ``[Pb]`` (its group, ``0 .. G-1``), ``same_i``/``same_j`` (pairs of patched
    tokens of one group), ``images`` (the images, in order) and ``first`` (the variant id of each image's
    group 0)."""

    images: list[int]
    first: list[int]
    tok: torch.Tensor
    local: torch.Tensor
    n_groups: int
    same_i: torch.Tensor
    same_j: torch.Tensor
    n_images: int

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """The rows of these images from a per-image tensor ``[B, ...]`` (a view when they are all of them)."""
        if self.images == list(range(self.n_images)):
            return t
        return t[torch.tensor(self.images, device=t.device)]


def fast_scores(adapter: Adapter, layers: list[int] | tuple[int, ...], score_fn: ScoreFn,
                source: dict[int, torch.Tensor], context_prefix: torch.Tensor, target: torch.Tensor,
                variants: Variants, classes: torch.Tensor | None,
                dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
    """Fast CAAP scores per variant: ``[V]`` for each image's ``target`` and ``[V, K']`` for the ``classes``
    ``[K']`` asked for (one backward pass per class, plus one for the targets unless every target is among the
    classes); the context run's scores ``[B, K]``; the number of backward passes.

    ``source``: the source run's block inputs ``{l: [B, N, D]}`` at the patched blocks; ``context_prefix``:
    the context run entering block ``min(layers)``, ``[B, N, D]``."""
    device = context_prefix.device
    views = {i: require(adapter, BlockViews).block_view(i) for i in range(layers[0], adapter.num_blocks)}
    sets = layouts(variants, adapter.num_prefix, device)
    with torch.enable_grad(), autocast(device, dtype):
        ctx, outs, final, logits = context_pass(adapter, views, context_prefix.clone())
        scores = apply_score(score_fn, logits)  # [B, K]
    with torch.no_grad(), autocast(device, dtype):
        paths = [token_paths(views, layers, source, ctx, g) for g in sets]  # per layout: keys, values, final
        head = _head_term(adapter, score_fn, final.detach(), scores.detach(), variants, sets, paths)
    wanted = [] if classes is None else [int(c) for c in classes]
    from_classes = bool(wanted) and set(target.tolist()) <= set(wanted)  # the targets' maps are among them
    rows: list[int | None] = [*wanted] + ([] if from_classes else [None])
    out = []
    for n, c in enumerate(rows):
        picked = scores[:, c] if c is not None else scores.gather(1, target.to(device)[:, None])[:, 0]
        grads = torch.autograd.grad(picked.sum(), outs, retain_graph=n < len(rows) - 1)
        total = torch.zeros(len(variants), device=device)
        for g, (keys, values, _) in zip(sets, paths, strict=True):
            for layer, grad, k_new, v_new in zip(ctx, grads, keys, values, strict=True):
                first_order(layer, grad.float(), k_new, v_new, g, total)
        out.append(total)
    image = variants.image.to(device)
    per_class = None
    if wanted:
        per_class = torch.stack(out[: len(wanted)], 1)  # [V, K']
        if head is not None:
            per_class = per_class + head[:, torch.as_tensor(wanted, device=device)]
    if from_classes:
        column = torch.tensor([wanted.index(int(t)) for t in target], device=device)[image]
        per_target = per_class.gather(1, column[:, None])[:, 0]
    else:
        per_target = out[-1]
        if head is not None:
            per_target = per_target + head.gather(1, target.to(device)[image, None])[:, 0]
    return per_target, per_class, scores.detach(), len(rows)


def layouts(variants: Variants, num_prefix: int, device: torch.device) -> list[Groups]:
    """Images grouped by their group layout (the usual case, one layout for all images, batches them)."""
    pv = variants.patch_variant  # [B, P_img], -1 where not patched
    start = torch.cumsum(torch.bincount(variants.image, minlength=pv.shape[0]), 0) - torch.bincount(
        variants.image, minlength=pv.shape[0])
    layouts: dict[tuple, list[int]] = {}
    for b in range(pv.shape[0]):
        local = pv[b] - start[b]
        layouts.setdefault(tuple(torch.where(pv[b] >= 0, local, -1).tolist()), []).append(b)
    out = []
    for key, images in layouts.items():
        local_all = torch.tensor(key)
        kept = (local_all >= 0).nonzero()[:, 0]
        order = torch.argsort(local_all[kept], stable=True)  # patched tokens sorted by group, as the variants
        tok = kept[order] + num_prefix  # patch index -> token index
        local = local_all[kept][order]
        same_i, same_j = _within(local)
        out.append(Groups(images, [int(start[b]) for b in images], tok.to(device), local.to(device),
                           int(local.max()) + 1, same_i.to(device), same_j.to(device), pv.shape[0]))
    return out


def context_pass(adapter: Adapter, views: dict[int, BlockView], z: torch.Tensor):
    """The context run from block ``min(views)`` with every attention output ``o_l`` in the graph."""
    ctx, outs = [], []
    for view in views.values():
        q, k, v = (t.transpose(-3, -2) for t in view.project(z))  # [B, H, N, hd]
        q = q * view.scale
        logits = q @ k.transpose(-1, -2)  # [B, H, N, N]
        lse = torch.logsumexp(logits.float(), -1)  # [B, H, N]
        probs = logits.float().softmax(-1)
        o = probs.to(v.dtype) @ v  # [B, H, N, hd]
        outs.append(o)
        ctx.append(ContextLayer(q.detach().float(), k.detach().float(), v.detach().float(), probs.detach(),
                                lse.detach(), o.detach().float()))
        z = view.finish(z, o.transpose(-3, -2))  # [B, N, D]
    return ctx, outs, z, adapter.head(z)


def token_paths(views: dict[int, BlockView], layers: list[int], source: dict[int, torch.Tensor],
                 ctx: list[ContextLayer], g: Groups):
    """Step 1 for the images of one layout: each group's own tokens through every block from
    ``min(layers)``, the other tokens frozen at the context. Returns the new keys and values per block
    ``[b, Pb, H, hd]`` and the final states ``[b, Pb, D]``."""
    i, j, tj = g.same_i, g.same_j, g.tok[g.same_j]
    keys, values = [], []
    y = None
    for (index, view), layer in zip(views.items(), ctx, strict=True):
        if index in layers:
            y = g.take(source[index])[:, g.tok]  # [b, Pb, D] the overwrite
        q, k, v = (t.float() for t in view.project(y))  # [b, Pb, H, hd]
        keys.append(k)
        values.append(v)
        with torch.autocast(y.device.type, enabled=False):  # the mixing in float32; the projections as asked
            q = (q * view.scale).transpose(1, 2)  # [b, H, Pb, hd]
            kc, vc = g.take(layer.k), g.take(layer.v)  # [b, H, N, hd]
            scores = q @ kc.transpose(-1, -2)  # [b, H, Pb, N] against the context keys
            scores[:, :, i, tj] = (q[:, :, i] * k.transpose(1, 2)[:, :, j]).sum(-1)  # the group's own keys: new
            probs = scores.softmax(-1)
            o = probs @ vc  # [b, H, Pb, hd]
            swap = probs[:, :, i, tj][..., None] * (v.transpose(1, 2)[:, :, j] - vc[:, :, tj])  # [b, H, n, hd]
            o = o.index_add(2, i, swap).transpose(1, 2)  # [b, Pb, H, hd]
        y = view.finish(y, o.to(y.dtype))
    return keys, values, y


def _within(local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs ``(i, j)`` of patched tokens in the same group (``local`` sorted, ``[Pb]``)."""
    counts = torch.bincount(local)
    if bool((counts == 1).all()):
        every = torch.arange(local.shape[0])
        return every, every
    starts = torch.cumsum(counts, 0) - counts
    size = counts[local]  # [Pb] group size of each token
    i = torch.repeat_interleave(torch.arange(local.shape[0]), size)
    offset = torch.arange(int(size.sum())) - torch.repeat_interleave(torch.cumsum(size, 0) - size, size)
    return i, starts[local[i]] + offset


def first_order(layer: ContextLayer, grad: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, g: Groups,
                 total: torch.Tensor) -> None:
    """Step 2 at one block for the images of one layout: adds ``Σ_{q ∉ S} ⟨G[q], Δo[q]⟩`` to ``total[V]``."""
    gr, q, v = g.take(grad), g.take(layer.q), g.take(layer.v)  # [b, H, N, hd]
    t = _as_slice(g.tok)  # the patch columns: a plain slice when contiguous (one group per patch)
    a = g.take(layer.probs)[..., t]  # [b, H, N, Pb] context probability of each patched key
    log_beta = q @ k_new.permute(0, 2, 3, 1) - g.take(layer.lse)[..., None]  # [b, H, N, Pb]
    gv_old = gr @ v[:, :, t].transpose(-1, -2)  # [b, H, N, Pb] ⟨G_q, v_j⟩
    gv_new = gr @ v_new.permute(0, 2, 3, 1)  # [b, H, N, Pb] ⟨G_q, v'_j⟩
    go = (gr * g.take(layer.o)).sum(-1, keepdim=True)  # [b, H, N, 1] ⟨G_q, o_q⟩
    if g.n_groups == g.tok.shape[0] and bool(log_beta.max() < 60):  # one token per group, exp() stays finite
        beta = log_beta.exp()
        num = a * (go - gv_old) + beta * (gv_new - go)
        den = 1 + beta - a
    else:  # sums within groups, with a shift per group that keeps exp() finite
        shape = (*log_beta.shape[:3], g.n_groups)
        idx = g.local.expand_as(log_beta)
        m = torch.zeros(shape, device=grad.device).scatter_reduce(3, idx, log_beta, "amax", include_self=True)
        mj = m[..., g.local]  # [b, H, N, Pb]
        beta, a_s = (log_beta - mj).exp(), a * (-mj).exp()
        num = torch.zeros(shape, device=grad.device).index_add_(3, g.local, a_s * (go - gv_old) + beta * (gv_new - go))
        den = (-m).exp().index_add_(3, g.local, beta - a_s)  # [b, H, N, G]
    contrib = num / den  # [b, H, N, G]
    contrib[:, :, g.tok, g.local] = 0  # a group's own tokens are exact (step 1), not first order
    per_group = contrib.sum((1, 2))  # [b, G]
    first = torch.tensor(g.first, device=grad.device)
    total.index_add_(0, (first[:, None] + torch.arange(g.n_groups, device=grad.device)).flatten(), per_group.flatten())


def _as_slice(index: torch.Tensor) -> slice | torch.Tensor:
    """``index`` as a slice when it is a contiguous increasing range (no gather), else as it is."""
    first, n = int(index[0]), index.shape[0]
    if int(index[-1]) == first + n - 1 and bool((index.diff() == 1).all()):
        return slice(first, first + n)
    return index


def _head_term(adapter: Adapter, score_fn: ScoreFn, final: torch.Tensor, scores: torch.Tensor, variants: Variants,
               sets: list[Groups], paths: list) -> torch.Tensor | None:
    """``score(head(context with the group's final states)) − score(head(context))`` per group ``[V, K]``,
    exact; ``None`` when the head reads only prefix rows (then a patch's final state does not reach it)."""
    rows = adapter.head_rows
    if rows is not None and all(r < adapter.num_prefix for r in rows):
        return None
    out = torch.empty(len(variants), scores.shape[1], device=final.device)
    for g, (_, _, y) in zip(sets, paths, strict=True):
        for n, (b, first) in enumerate(zip(g.images, g.first, strict=True)):
            z = final[b].expand(g.n_groups, -1, -1).clone()  # [G, N, D]
            z[g.local, g.tok] = y[n].to(z.dtype)
            out[first : first + g.n_groups] = apply_score(score_fn, adapter.head(z)) - scores[b]
    return out


class Fast(Strategy):
    """The fast mode (module docstring): each group's own tokens exact, the other tokens to first order through
    one backward pass of the base run; about four forward passes per image. ``direction`` as for
    :class:`~caap.methods.caap.exact.Exact`: noising runs the same derivation with the roles swapped (the base
    run is the source, the patched tokens' stream the context's, the backward pass the source run's)."""

    name = "fast"
    uses_base_scores = False  # the base run is run here, with its gradients

    def check(self, setting: Setting) -> None:
        for index in range(setting.adapter.num_blocks):
            require(setting.adapter, BlockViews).block_view(index)  # token-wise pieces, or a one-line refusal

    def _patched(self, setting: Setting, runs: Runs, variants: Variants, target: torch.Tensor,
                 classes: torch.Tensor | None, progress: bool) -> Effects:
        with torch.inference_mode(False):
            per_target, per_class, base, passes = fast_scores(
                setting.adapter, setting.layers, setting.score_fn, runs.donor.stream,
                runs.base.prefix(setting.first), target, variants, classes, setting.dtype)
        return Effects(per_target, per_class, base, {"variants": len(variants), "backward_passes": passes})
