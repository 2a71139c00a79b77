"""ViT-CX (Xie, Li, Zhang, Chen & Zhang, IJCAI 2023, "ViT-CX: Causal Explanation of Vision Transformers"), as its
authors compute it (github.com/vaynexie/CausalX-ViT, ``ViT_CX`` and ``causal_score``).

1. **Masks from the model's own features.** The patch tokens of one layer's output (the authors' default: the last
   block's ``norm1``, i.e. the normalised stream entering the last block) give one ``[gh, gw]`` map per channel;
   each is resized to the input size (bilinear) and min-max normalised: ``D`` masks ``[H, W]`` in [0, 1].
2. **Clustering.** Masks whose cosine similarity exceeds ``1 − distance_threshold`` are merged by complete-linkage
   agglomerative clustering on the distance ``1 − cos`` (threshold 0.1); each cluster's masks are summed and the sum
   min-max normalised: ``K`` masks ``M_k``.
3. **Causal impact with noise.** With Gaussian noise ``ε_k`` (std 0.1, in the normalised input space) the model sees
   ``x ⊙ M_k + ε_k ⊙ (1 − M_k)`` and ``x + ε_k ⊙ (1 − M_k)``; with ``p`` the softmax probability of the target and
   ``p_0`` that of the unmasked image, ``s_k = p(x ⊙ M_k + …) − p(x + …) + p_0``, and the map is
   ``Σ_k s_k M_k / Σ_k M_k / K`` per pixel (the authors' coverage-normalised sum).

The clustering is SciPy's complete-linkage tree (``scipy.cluster.hierarchy.linkage``, which scikit-learn's
``AgglomerativeClustering`` also calls for a precomputed distance), cut and numbered as scikit-learn does: the
order matters, because cluster ``k`` meets the ``k``-th noise draw. The noise is drawn from a generator seeded per
image (``seed``; the authors draw from torch's global generator), so a map does not depend on the batch. ``2K``
forwards per image, batched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caap.adapters.capabilities import BlockViews, require
from caap.core.budget import check_batch_size
from caap.errors import CaapError
from caap.methods.base import Explainer, Forward, Maps, register


def cluster_masks(masks: torch.Tensor, distance_threshold: float) -> torch.Tensor:
    """``masks`` ``[D, H·W]`` in [0, 1] -> the clusters' normalised summed masks ``[K, H·W]``: complete linkage on
    ``1 − cosine`` (float32, as the authors compute it), cut where a merge would reach ``distance_threshold``,
    clusters numbered as scikit-learn numbers them (:func:`cut_order`), so each cluster meets the same noise draw."""
    import numpy as np
    from scipy.cluster.hierarchy import linkage

    m = masks.float()
    norms = torch.linalg.norm(m, dim=1)
    cos = (m @ m.T) / (norms.reshape(-1, 1) * norms)
    cos[torch.isnan(cos)] = 0  # the authors: a constant (all-zero) mask has similarity 0
    distance = (1 - cos).numpy()
    n = len(m)
    if n == 1:
        labels = np.zeros(1, dtype=np.int64)
    else:
        tree = linkage(distance[np.triu_indices(n, k=1)], method="complete")
        labels = cut_order(int(np.count_nonzero(tree[:, 2] >= distance_threshold)) + 1, tree[:, :2].astype(int), n)
    labels = torch.as_tensor(labels, dtype=torch.long)
    summed = torch.zeros(int(labels.max()) + 1, masks.shape[1], dtype=masks.dtype).index_add_(0, labels, masks)
    return min_max_rows(summed)


def cut_order(k: int, children, n_leaves: int):
    """Labels ``[n_leaves]`` of the ``k`` clusters left when the last ``k − 1`` merges of a linkage tree
    (``children`` ``[n − 1, 2]``, SciPy's and scikit-learn's node numbering) are undone, numbered in the order
    scikit-learn's agglomerative clustering gives them: the roots kept in a heap of negated node ids, each step
    replacing the newest merge by its two children, then numbered in the heap's array order."""
    import heapq

    import numpy as np

    nodes = [-(int(max(children[-1])) + 1)]
    for _ in range(k - 1):
        left, right = children[-nodes[0] - n_leaves]
        heapq.heappush(nodes, -int(left))
        heapq.heappushpop(nodes, -int(right))
    labels = np.zeros(n_leaves, dtype=np.int64)
    for i, node in enumerate(nodes):
        stack = [-node]
        while stack:
            top = stack.pop()
            if top < n_leaves:
                labels[top] = i
            else:
                stack.extend(int(c) for c in children[top - n_leaves])
    return labels


def min_max_rows(a: torch.Tensor) -> torch.Tensor:
    """Each row of ``a`` ``[K, M]`` scaled to [0, 1] (the authors' ``norm_matrix``; a constant row gives NaN there,
    0 here)."""
    low, high = a.amin(1, keepdim=True), a.amax(1, keepdim=True)
    return torch.nan_to_num((a - low) / (high - low), nan=0.0)


@register
class ViTCX(Explainer):
    """ViT-CX: feature-map masks, clustered, scored by their causal impact with noise (module docstring).

    Args:
        layer: the block whose normalised input stream (``norm1``) gives the masks; default the last (-1).
        distance_threshold: the clustering's threshold on ``1 − cosine`` (the authors' 0.1).
        noise: the std of the Gaussian noise in the normalised input space (the authors' 0.1).
        seed: the noise generator's seed (per image).
        batch_size: masked images per forward (the authors' ``gpu_batch`` 50).
    """

    name = "vit_cx"
    resolution = "pixel"
    signed = False

    def __init__(self, model, layer: int = -1, distance_threshold: float = 0.1, noise: float = 0.1, seed: int = 0,
                 batch_size: int | None = None, **kwargs) -> None:
        super().__init__(model, **kwargs)
        require(self.adapter, BlockViews)
        blocks = self.adapter.num_blocks
        if isinstance(layer, bool) or not isinstance(layer, int) or not -blocks <= layer < blocks:
            raise CaapError(f"layer must be a block index in [{-blocks}, {blocks - 1}], got {layer!r}")
        for name, value in (("distance_threshold", distance_threshold), ("noise", noise)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise CaapError(f"{name} must be a non-negative number, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CaapError(f"seed must be an int, got {seed!r}")
        self.layer, self.distance_threshold, self.noise, self.seed = layer % blocks, float(distance_threshold), \
            float(noise), seed
        self.batch_size = check_batch_size(batch_size) or 50
        self.view = self.adapter.block_view(self.layer)

    def settings(self) -> dict:
        return {**super().settings(), "layer": self.layer, "distance_threshold": self.distance_threshold,
                "noise": self.noise, "seed": self.seed, "batch_size": self.batch_size}

    def _forward(self, images: torch.Tensor) -> Forward:
        adapter, grid = self.adapter, self.adapter.grid((images.shape[2], images.shape[3]))
        with torch.inference_mode():
            z, features = adapter.embed(images), None
            for index in range(adapter.num_blocks):
                if index == self.layer:
                    features = self.view.norm1(z)[:, adapter.num_prefix:]  # [B, P, D]
                z = adapter.run_block(index, z, grid)
            return Forward(adapter.head(z), features)

    @torch.inference_mode()
    def _attribute(self, images, target, *, grid, forward) -> Maps:
        features, (h, w) = forward.cache, images.shape[2:]
        probs = forward.scores.float().softmax(-1)  # [B, C]
        maps = []
        for b in range(images.shape[0]):
            fmap = features[b].float().T.reshape(-1, *grid)  # [D, gh, gw]
            fmap = F.interpolate(fmap[None], size=(h, w), mode="bilinear", align_corners=False,
                                 antialias=True)[0]  # [D, H, W]
            masks = cluster_masks(min_max_rows(fmap.flatten(1)), self.distance_threshold)  # [K, H·W]
            maps.append(self._causal_score(images[b], masks.reshape(-1, 1, h, w), int(target[b]),
                                           float(probs[b, target[b]])))
        return Maps(torch.stack(maps))

    def _causal_score(self, x: torch.Tensor, masks: torch.Tensor, target: int, p0: float) -> torch.Tensor:
        """The map ``[H, W]`` of one image ``x`` ``[3, H, W]`` from its masks ``[K, 1, H, W]``."""
        k = masks.shape[0]
        generator = torch.Generator().manual_seed(self.seed)
        eps = (torch.randn(k, *x.shape, generator=generator) * self.noise).to(x.device, x.dtype)
        masks = masks.to(x.device, x.dtype)
        spread = eps * (1 - masks)  # [K, 3, H, W]
        batch = torch.cat([x * masks + spread, x + spread])  # [2K, 3, H, W]
        p = torch.cat([self.adapter.forward(batch[i : i + self.batch_size]).float().softmax(-1)[:, target]
                       for i in range(0, len(batch), self.batch_size)])
        score = p[:k] - p[k:] + p0  # [K]
        flat = masks.flatten(1).float()  # [K, H·W]
        sal = (score[:, None] * flat / flat.sum(0, keepdim=True)).sum(0) / k
        return torch.nan_to_num(sal, nan=0.0).reshape(x.shape[1:])
