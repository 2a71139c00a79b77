"""AtMan (Deiseroth, Deb, Weinbach, Brack, Schramowski & Kersting, NeurIPS 2023): attention manipulation, as its
authors compute it (github.com/Aleph-Alpha/AtMan, ``atman_magma``: ``manipulate_attention_scores`` and
``ConceptualSuppression``).

For each patch token ``i`` the model runs once with ``i`` suppressed in the attention of **every** block and head:
the pre-softmax scores ``s`` ``[B, heads, N, N]`` are shifted so each row's minimum is 0, and the score column of
every suppressed key ``j`` is multiplied by its factor ``f_j``, then the softmax is taken. Token ``i``'s factor is
``factor`` (the authors' 0.1); with conceptual suppression (``threshold`` not None), every other token ``j`` whose
input embedding has cosine similarity ``c_ij >= threshold`` with ``i``'s is suppressed too, with factor
``(1 − factor)(1 − c_ij) + factor`` (the authors' ``modify_suppression_factor_based_on_cossim``). The embeddings are
the transformer's inputs ``z_0`` (patch embeddings with positions, prefix tokens included), as the authors compare
their generative model's input embeddings.

The map is the change of the target's cross entropy: ``A[i] = CE(suppressed i) − CE(original)`` (positive:
suppressing ``i`` costs the target; the authors' ``get_delta_cross_entropies`` reports ``CE(original) −
CE(suppressed)``, the opposite sign, and their examples square it). ``P`` forwards per image, batched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caap.adapters.capabilities import BlockViews, require
from caap.core.budget import check_batch_size
from caap.errors import CaapError
from caap.methods.base import Explainer, Forward, Maps, register


def suppression_factors(embeddings: torch.Tensor, num_prefix: int, factor: float, threshold: float | None,
                        by_similarity: bool = True) -> torch.Tensor:
    """The key factors of each patch's suppressed run, ``[P, N]`` (1: untouched), from one image's input
    embeddings ``[N, D]``."""
    n = embeddings.shape[0]
    patches = torch.arange(num_prefix, n, device=embeddings.device)
    out = torch.ones(len(patches), n, dtype=torch.float32, device=embeddings.device)
    if threshold is not None:
        e = embeddings.float()
        e = e / e.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        cos = (e[patches] @ e.T).clamp(-1, 1)  # [P, N]
        similar = cos >= threshold
        scaled = (1 - factor) * (1 - cos) + factor if by_similarity else torch.full_like(cos, factor)
        scaled = torch.where((cos >= 0) & (cos <= 1), scaled, torch.ones_like(cos))
        out = torch.where(similar, scaled, out)
    out[torch.arange(len(patches)), patches] = factor
    return out


def manipulated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                          factors: torch.Tensor) -> torch.Tensor:
    """Attention with AtMan's manipulation: ``q, k, v`` ``[R, H, N, hd]``, ``factors`` ``[R, N]`` per key;
    returns ``[R, H, N, hd]``."""
    s = (q @ k.transpose(-2, -1)) * scale  # [R, H, N, N]
    s = (s - s.amin(-1, keepdim=True)) * factors[:, None, None, :]
    return s.softmax(-1) @ v


@register
class AtMan(Explainer):
    """AtMan: each patch suppressed in every block's attention, the target's cross entropy compared (module
    docstring).

    Args:
        factor: the suppressed token's factor on its (shifted) attention scores (the authors' 0.1).
        threshold: conceptual suppression's cosine-similarity threshold (the authors' ``Explainer`` default 0.6),
            or None for the token alone.
        by_similarity: scale a similar token's factor by its similarity (the authors' default True).
        batch_size: suppressed runs per forward (default: 32).
    """

    name = "atman"
    resolution = "patch"

    def __init__(self, model, factor: float = 0.1, threshold: float | None = 0.6, by_similarity: bool = True,
                 batch_size: int | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        require(self.adapter, BlockViews)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 <= factor <= 1:
            raise CaapError(f"factor must be a number in [0, 1], got {factor!r}")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not 0 <= threshold <= 1):
            raise CaapError(f"threshold must be a number in [0, 1] or None, got {threshold!r}")
        if not isinstance(by_similarity, bool):
            raise CaapError(f"by_similarity must be True or False, got {by_similarity!r}")
        self.factor, self.threshold, self.by_similarity = float(factor), threshold, by_similarity
        self.batch_size = check_batch_size(batch_size) or 32
        self.views = [self.adapter.block_view(i) for i in range(self.adapter.num_blocks)]

    def settings(self) -> dict:
        return {**super().settings(), "factor": self.factor, "threshold": self.threshold,
                "by_similarity": self.by_similarity, "batch_size": self.batch_size}

    def _forward(self, images: torch.Tensor) -> Forward:
        with torch.inference_mode():
            z = self.adapter.embed(images)  # [B, N, D]
            unmanipulated = self._run(z, torch.ones(z.shape[:2], device=z.device))  # the same arithmetic path
            return Forward(self.adapter.forward(images), (z, unmanipulated))

    def _run(self, z: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """Logits ``[R, C]`` of the streams ``z`` ``[R, N, D]`` with every block's attention manipulated by
        ``factors`` ``[R, N]`` (all ones: the model's own attention, up to the min shift, which the softmax
        ignores)."""
        for view in self.views:
            q, k, v = (t.transpose(1, 2) for t in view.project(z))  # [R, H, N, hd]
            o = manipulated_attention(q, k, v, view.scale, factors.to(q.dtype)).transpose(1, 2)  # [R, N, H, hd]
            z = view.finish(z, o)
        return self.adapter.head(z)

    @torch.inference_mode()
    def _attribute(self, images, target, *, grid, forward) -> Maps:
        (z0, unmanipulated), prefix = forward.cache, self.adapter.num_prefix
        base = F.cross_entropy(unmanipulated.float(), target.to(unmanipulated.device), reduction="none")  # [B]
        maps = []
        for b in range(z0.shape[0]):
            factors = suppression_factors(z0[b], prefix, self.factor, self.threshold, self.by_similarity)  # [P, N]
            losses = []
            for start in range(0, len(factors), self.batch_size):
                chunk = factors[start : start + self.batch_size]
                logits = self._run(z0[b : b + 1].expand(len(chunk), -1, -1), chunk).float()
                losses.append(F.cross_entropy(logits, target[b].to(logits.device).expand(len(chunk)),
                                              reduction="none"))
            maps.append(torch.cat(losses) - base[b])
        return Maps(torch.stack(maps).reshape(-1, *grid))
