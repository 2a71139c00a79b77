"""Transformer Input Sampling (Englebert, Stassin, Nanfack, Mahmoudi, Siebert, Cornu & De Vleeschouwer,
"Explaining through Transformer Input Sampling", ICCV 2023 workshops), as the authors' code computes it
(github.com/aenglebert/Transformer_Input_Sampling, ``tis/tis.py``):

1. One run of the image; the outputs of every block are concatenated per token: ``[N, L · D]``.
2. The ``L · D`` activation channels, each a vector over the ``P`` patch tokens (prefix tokens dropped), are
   clustered with k-means into ``masks`` clusters (:mod:`caap.core.kmeans`, the authors' k-means).
3. Each centroid ``[P]`` keeps its ``int(keep · P)`` highest tokens: one binary token mask per centroid.
4. The model runs on each mask's tokens (the prefix tokens always kept), fed after the position embedding, so
   no pixel changes; the score is the softmax probability of the target.
5. The map is the score-weighted sum of the masks divided by each token's coverage (the number of masks that
   kept it), then min-max scaled to [0, 1] (``normalise``, the authors' default).

Deterministic: the k-means starts from ``seed`` for every image (the authors' code continues numpy's global
generator from image to image; seeding it with ``seed`` before each image gives caap's masks). The masks'
forwards are batched over masks and images.
"""

from __future__ import annotations

import torch

from caap.core.kmeans import INITS, KMEANS_016, kmeans
from caap.core.scores import ScoreFn, apply_score
from caap.errors import CaapError
from caap.methods.base import Forward, Maps, register
from caap.methods.tokens import TokenSubsets


@register
class TIS(TokenSubsets):
    """Transformer Input Sampling with activation-clustered token masks (see the module docstring).

    Args:
        masks: k-means clusters, one token mask each (the authors' 1,024). A model with fewer activation
            channels (``L · D``) than ``masks`` gets one cluster per channel (meta ``masks``).
        keep: share of the patch tokens each mask keeps (``int(keep · P)``; the authors' 0.5).
        seed: the k-means initialisation's seed (the same for every image).
        kmeans: whose k-means initialisation, ``"0.1.6"`` (the authors' pinned fast-pytorch-kmeans: distinct
            points) or ``"0.2.2"`` (that package's later default: points drawn with repeats; robustness studies).
        max_iter, tol: the k-means stopping rule (the authors' package defaults, 100 and 1e-4).
        normalise: min-max scale each map to [0, 1], as the authors' default does.
        score: ``"prob"`` (the authors'), ``"logit"``, ``"logprob"`` or a callable.
    """

    name = "tis"
    signed = False

    def __init__(self, model, masks: int = 1024, keep: float = 0.5, seed: int = 0, max_iter: int = 100,
                 tol: float = 1e-4, normalise: bool = True, score: str | ScoreFn = "prob", kmeans: str = KMEANS_016,
                 **kwargs) -> None:
        super().__init__(model, score=score, **kwargs)
        for option, value in (("masks", masks), ("max_iter", max_iter)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CaapError(f"{option} must be a positive int, got {value!r}")
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 1:
            raise CaapError(f"keep must be a share in (0, 1) of the patch tokens, got {keep!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CaapError(f"seed must be an int, got {seed!r}")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
            raise CaapError(f"tol must be a non-negative number, got {tol!r}")
        if not isinstance(normalise, bool):
            raise CaapError(f"normalise must be True or False, got {normalise!r}")
        if kmeans not in INITS:
            raise CaapError(f"kmeans must be one of {', '.join(INITS)} (fast-pytorch-kmeans releases), got {kmeans!r}")
        self.kmeans = kmeans
        self.n_masks, self.keep, self.seed = masks, float(keep), seed
        self.max_iter, self.tol, self.normalise = max_iter, float(tol), normalise

    def settings(self) -> dict:
        return {**super().settings(), "masks": self.n_masks, "keep": self.keep, "seed": self.seed,
                "max_iter": self.max_iter, "tol": self.tol, "normalise": self.normalise, "kmeans": self.kmeans}

    def _forward(self, images: torch.Tensor) -> Forward:
        with torch.inference_mode():
            z, grid = self.adapter.embed(images), self.adapter.grid((images.shape[2], images.shape[3]))  # [B, N, D]
            outputs, h = [], z
            for index in range(self.adapter.num_blocks):
                h = self.adapter.run_block(index, h, grid)
                outputs.append(h)
            scores = apply_score(self.score_fn, self.adapter.head(h))
        return Forward(scores, (z, torch.cat(outputs, -1)))  # activations [B, N, L·D]

    def token_masks(self, activations: torch.Tensor, n_patch: int) -> torch.Tensor:
        """The kept patch indices of each mask, ``[M, int(keep · P)]`` (highest centroid value first), from one
        image's block outputs ``[N, L · D]``."""
        channels = activations[self.adapter.num_prefix :].T.float()  # [L·D, P]: one point per channel
        clusters = min(self.n_masks, channels.shape[0])
        centroids = kmeans(channels, clusters, self.seed, self.max_iter, self.tol, init=self.kmeans)  # [M, P]
        return centroids.topk(int(self.keep * n_patch), dim=1).indices

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        z, activations = forward.cache
        b, n_patch = images.shape[0], grid[0] * grid[1]
        if int(self.keep * n_patch) < 1:
            raise CaapError(f"keep={self.keep} keeps no token of the {n_patch} patches; expected keep >= 1/{n_patch}")
        kept = [self.token_masks(activations[i], n_patch).cpu() for i in range(b)]  # B x [M, k]
        m = kept[0].shape[0]
        image = torch.arange(b).repeat_interleave(m)  # [B*M]
        scores = self.subset_scores(z, image.to(z.device), torch.cat(kept), target).view(b, m).cpu()  # [B, M]
        maps = []
        for i in range(b):
            hit = torch.zeros(m, n_patch).scatter_(1, kept[i], 1.0)  # [M, P]
            saliency = (scores[i] @ hit) / hit.sum(0).clamp(min=1)  # [P]; a token no mask kept scores 0
            if self.normalise:
                saliency = saliency - saliency.min()
                top = saliency.max()
                saliency = saliency / top if top > 0 else saliency
            maps.append(saliency)
        return Maps(torch.stack(maps).view(b, *grid), meta={"forward_passes": b * m, "masks": m,
                                                            "tokens_per_mask": int(kept[0].shape[1])})
