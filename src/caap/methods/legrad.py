"""LeGrad (Bousselham, Boggust, Chaybouti, Strobelt & Kuehne, ICCV 2025), as its authors' code computes it
(github.com/WalBouss/LeGrad, ``LeWrapper.compute_legrad_clip``).

For every block ``l`` from ``start_layer`` on, the block's output ``z_{l+1}`` ``[B, N, D]`` is pooled and read by
the model's own head, as if it were the last block's (a logit lens): ``s_l = head(pool(z_{l+1}))[target]``. The
map of block ``l`` is the gradient of ``s_l`` with respect to that block's attention probabilities ``A_l``
``[B, heads, N, N]``, negative entries set to zero, averaged over the heads and over **every** query row (class
token and patches), read at the patch columns. The blocks' maps are summed and min-max normalised per image.

Two of the authors' choices are options here:

- ``pool="mean"`` (their code for class-token ViTs: the tokens averaged before the final norm and projection) or
  ``pool="head"`` (the model's own pooling: the class token for DeiT, the attention pooler for SigLIP — what their
  code does for attention-pooled towers);
- ``start_layer``: their wrapper's ``layer_index=-2`` (the last two blocks) is the default; ``0`` sums every
  block, as the paper's description of the method reads.

Their score for CLIP is the cosine similarity of the pooled feature with a text embedding; a zero-shot tower's
head in caap scales that by the model's logit scale, a positive constant that the min-max normalisation removes.
"""

from __future__ import annotations

import torch

from caap.adapters.capabilities import AttentionCapture, require
from caap.errors import CaapError
from caap.methods.base import Explainer, Forward, Maps, register

POOLS = ("mean", "head")


@register
class LeGrad(Explainer):
    """LeGrad: per-block gradients of a logit-lens score with respect to the attention maps (module docstring).

    Args:
        start_layer: first block (0-indexed; negative counts from the end, the authors' ``layer_index``) whose
            map enters the sum; default ``-2``.
        pool: ``"mean"`` (the authors' class-token ViTs) or ``"head"`` (the model's own pooling).
    """

    name = "legrad"
    needs_grad = True
    needs_attention = True
    signed = False

    def __init__(self, model, start_layer: int = -2, pool: str = "mean", **kwargs) -> None:
        super().__init__(model, **kwargs)
        blocks = self.adapter.num_blocks
        if isinstance(start_layer, bool) or not isinstance(start_layer, int) or not -blocks <= start_layer < blocks:
            raise CaapError(f"start_layer must be a block index in [{-blocks}, {blocks - 1}], got {start_layer!r}")
        if pool not in POOLS:
            raise CaapError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self.start_layer, self.pool = start_layer % blocks, pool

    def settings(self) -> dict:
        return {**super().settings(), "start_layer": self.start_layer, "pool": self.pool}

    def _forward(self, images: torch.Tensor) -> Forward:
        adapter, grid = self.adapter, self.adapter.grid((images.shape[2], images.shape[3]))
        with require(adapter, AttentionCapture).capture_attention() as maps, torch.enable_grad():
            z = adapter.embed(images.detach().requires_grad_(True))  # a graph through every attention map
            outputs = []
            for index in range(adapter.num_blocks):
                z = adapter.run_block(index, z, grid)
                outputs.append(z)  # [B, N, D], the output of block index
            logits = adapter.head(z)
            return Forward(logits.detach(), (outputs, maps.get()))

    def _lens(self, z: torch.Tensor) -> torch.Tensor:
        """The head's scores ``[B, C]`` of an intermediate stream ``z`` ``[B, N, D]``, pooled as configured."""
        if self.pool == "mean":  # every token the mean token: any head's own pooling then reads the mean
            z = z.mean(1, keepdim=True).expand_as(z)
        return self.adapter.head(z)

    def _attribute(self, images, target, *, grid, forward) -> Maps:
        outputs, attentions = forward.cache
        total = None
        with torch.enable_grad():
            for layer in range(self.start_layer, self.adapter.num_blocks):
                scores = self._lens(outputs[layer])
                score = scores.gather(1, target.to(scores.device)[:, None]).sum()
                (grad,) = torch.autograd.grad(score, attentions[layer], retain_graph=True)  # [B, heads, N, N]
                layer_map = grad.detach().float().clamp(min=0).mean(1).mean(1)  # heads, then every query row
                total = layer_map if total is None else total + layer_map
        patch = total[:, self.adapter.num_prefix:]  # [B, gh*gw]
        low, high = patch.amin(1, keepdim=True), patch.amax(1, keepdim=True)
        return Maps(((patch - low) / (high - low).clamp(min=1e-12)).reshape(-1, *grid))
