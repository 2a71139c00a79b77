"""Token-level perturbation: the model runs on a subset of its patch tokens (a ViT takes any token count;
no pixel changes). Prefix tokens (class, distillation, registers) are always kept.

- ``token_occlusion``: ``A[p] = s(all tokens)[c] − s(all tokens but p)[c]``, every patch batched.
- ``tis`` (:mod:`caap.methods.tis`): Transformer Input Sampling (Englebert et al., ICCV 2023 workshops) as its
  authors compute it: the token subsets come from the model's own activations.
- ``token_rise``: RISE on tokens — ``masks`` random subsets of ``keep · P`` patch tokens (seeded), each token's
  score the mean target score of the subsets that kept it. TIS's sampling scheme with random instead of
  activation-clustered subsets (what caap called ``tis`` until the authors' version replaced it): an ablation of
  TIS's masks, and a cheap token-level RISE.
"""

from __future__ import annotations

import torch

from caap.core.budget import check_batch_size, module_batch_size
from caap.core.scores import ScoreFn, apply_score, make_score
from caap.errors import CaapError
from caap.methods.base import Explainer, Forward, Maps, register


class TokenSubsets(Explainer):
    """Base: scores of the model run on subsets of each image's patch tokens, batched."""

    resolution = "patch"

    def __init__(self, model, score: str | ScoreFn = "logit", batch_size: int | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if not self.adapter.token_subsets:
            raise self.adapter.unsupported("token_subsets (rotary position embeddings belong to every patch's "
                                           "position; runs on a subset of the tokens are not supported)")
        self.score_name, self.score_fn = make_score(score)
        self.batch_size = check_batch_size(batch_size)

    def settings(self) -> dict:
        return {**super().settings(), "score": self.score_name, "batch_size": self.batch_size}

    def _forward(self, images: torch.Tensor) -> Forward:
        with torch.inference_mode():
            z = self.adapter.embed(images)  # [B, N, D]; the full run resolves the target
            grid = self.adapter.grid((images.shape[2], images.shape[3]))
            scores = apply_score(self.score_fn, self._blocks_and_head(z, grid))
        return Forward(scores, z)

    def _blocks_and_head(self, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """The blocks and head on ``z`` ``[B, N, D]`` (``grid``: the full images' patch grid; None for runs on a
        subset of the tokens, which only adapters with ``token_subsets`` take)."""
        for index in range(self.adapter.num_blocks):
            z = self.adapter.run_block(index, z, grid)
        return self.adapter.head(z)

    @torch.inference_mode()
    def subset_scores(self, z: torch.Tensor, image: torch.Tensor, kept: torch.Tensor,
                      target: torch.Tensor) -> torch.Tensor:
        """Target scores ``[R]`` of runs that keep patch tokens ``kept`` ``[R, k]`` (patch indices) of images
        ``image`` ``[R]``, from the embedded tokens ``z`` ``[B, N, D]``; ``ceil(R / chunk)`` batched forwards."""
        prefix = self.adapter.num_prefix
        n_kept = prefix + kept.shape[1]
        chunk = self.batch_size or module_batch_size(n_kept, z.device)
        out = torch.empty(kept.shape[0], device=z.device)
        rows = torch.arange(prefix, device=z.device).expand(kept.shape[0], -1)
        tokens = torch.cat([rows, kept.to(z.device) + prefix], 1)  # [R, prefix + k] token indices
        bar = self.progress_bar(kept.shape[0])
        for start in range(0, kept.shape[0], chunk):
            idx = slice(start, start + chunk)
            sub = z[image[idx, None], tokens[idx]]  # [n, prefix + k, D]
            scores = apply_score(self.score_fn, self._blocks_and_head(sub))
            out[idx] = scores.gather(1, target[image[idx], None].to(z.device))[:, 0]
            bar.update(len(out[idx]))
        bar.close()
        return out


@register
class TokenOcclusion(TokenSubsets):
    """Remove one patch token at a time: ``A[p] = s(x)[c] − s(x without token p)[c]`` (signed)."""

    name = "token_occlusion"

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        z = forward.cache  # [B, N, D]
        b, n_patch = images.shape[0], grid[0] * grid[1]
        every = torch.arange(n_patch)
        kept = torch.stack([every[every != p] for p in range(n_patch)])  # [P, P-1]: all but patch p
        image = torch.arange(b).repeat_interleave(n_patch)  # [B*P]
        without = self.subset_scores(z, image.to(z.device), kept.repeat(b, 1), target)  # [B*P]
        full = forward.scores.gather(1, target.to(forward.scores.device)[:, None])  # [B, 1]
        return Maps((full - without.view(b, n_patch)).view(b, *grid), meta={"forward_passes": b * n_patch})


@register
class TokenRISE(TokenSubsets):
    """RISE on tokens: random token subsets (see the module docstring).

    Args:
        masks: number of random token subsets per image.
        keep: share of patch tokens each subset keeps (``round(keep · P)`` tokens, at least one).
        seed: subsets are drawn on the CPU from ``seed`` and the subset's index, the same for every image.
        score: ``"prob"`` (as RISE), ``"logit"``, ``"logprob"`` or a callable.
    """

    name = "token_rise"
    signed = False

    def __init__(self, model, masks: int = 1000, keep: float = 0.5, seed: int = 0, score: str | ScoreFn = "prob",
                 **kwargs) -> None:
        super().__init__(model, score=score, **kwargs)
        if isinstance(masks, bool) or not isinstance(masks, int) or masks < 1:
            raise CaapError(f"masks must be a positive int, got {masks!r}")
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 1:
            raise CaapError(f"keep must be a share in (0, 1) of the patch tokens, got {keep!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CaapError(f"seed must be an int, got {seed!r}")
        self.n_masks, self.keep, self.seed = masks, float(keep), seed

    def settings(self) -> dict:
        return {**super().settings(), "masks": self.n_masks, "keep": self.keep, "seed": self.seed}

    def subsets(self, n_patch: int) -> torch.Tensor:
        """The kept patch indices of every subset, ``[masks, k]`` (sorted; deterministic per seed)."""
        k = max(1, round(self.keep * n_patch))
        gen = torch.Generator().manual_seed(self.seed)
        return torch.stack([torch.randperm(n_patch, generator=gen)[:k].sort().values for _ in range(self.n_masks)])

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        z = forward.cache
        b, n_patch = images.shape[0], grid[0] * grid[1]
        kept = self.subsets(n_patch)  # [M, k]
        image = torch.arange(b).repeat_interleave(self.n_masks)  # [B*M]
        scores = self.subset_scores(z, image.to(z.device), kept.repeat(b, 1), target).view(b, -1).cpu()  # [B, M]
        hit = torch.zeros(self.n_masks, n_patch).scatter_(1, kept, 1.0)  # [M, P] 1 where a subset kept the patch
        mean = (scores @ hit) / hit.sum(0).clamp(min=1)  # [B, P] mean score of the subsets that kept each patch
        return Maps(mean.view(b, *grid), meta={"forward_passes": b * self.n_masks,
                                               "tokens_per_subset": int(kept.shape[1])})



