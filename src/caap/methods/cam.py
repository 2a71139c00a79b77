"""Grad-CAM on ViT tokens, and conservative-propagation LRP (gradient × input with attention and
LayerNorm scale detached)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from caap.adapters.attention import capture_attention, hf_configs
from caap.adapters.hf import HFViTAdapter
from caap.adapters.timm import TimmViTAdapter
from caap.core.attribution import Attribution
from caap.core.targets import TargetLike, resolve_target
from caap.errors import CaapError, UnsupportedModelError
from caap.methods.base import Explainer
from caap.methods.registry import register


@register
class GradCAM(Explainer):
    """Grad-CAM (Selvaraju et al. 2017) on the patch tokens of the input of block ``layer``.

    Activations ``A = z_layer[:, prefix:]`` reshaped to ``[B, D, gh, gw]`` from the adapter's grid (never a
    hard-coded one); weights are the spatial mean of ``∂ logit_c / ∂ A``; ``cam = relu(Σ_d w_d A_d)``. The
    default ``layer=-1`` (input of the last block) is the output of the second-to-last block: patch tokens
    of the last block's *output* do not reach a class-token head.
    """

    name = "gradcam"
    resolution = "patch"
    needs_grad = True
    signed = False

    def __init__(self, model, layer: int = -1, **kwargs) -> None:
        super().__init__(model, **kwargs)
        n = self.adapter.num_blocks
        if not isinstance(layer, int) or not -n <= layer < n:
            raise CaapError(f"layer {layer!r} is out of range for a model with {n} blocks")
        self.layer = layer % n

    def _explain(self, images, target: TargetLike, *, grid, device, **kwargs) -> Attribution:
        adapter = self.adapter
        with torch.no_grad():
            tgt = resolve_target(target, adapter.forward(images))
        with torch.enable_grad():
            z = adapter.embed(images)
            for index in range(self.layer):
                z = adapter.run_block(index, z)
            acts = z.detach().requires_grad_(True)  # [B, N, D]
            z = acts
            for index in range(self.layer, adapter.num_blocks):
                z = adapter.run_block(index, z)
            logits = adapter.head(z)
            (grads,) = torch.autograd.grad(logits.gather(1, tgt.to(device)[:, None]).sum(), acts)
        p = adapter.num_prefix
        a = acts.detach()[:, p:].transpose(1, 2).reshape(len(images), -1, *grid)  # [B, D, gh, gw]
        g = grads[:, p:].transpose(1, 2).reshape(len(images), -1, *grid)
        cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1))  # [B, gh, gw]
        return Attribution(cam.float().cpu(), tgt, tuple(images.shape[-2:]), self.name,
                           meta={"method": self.name, "layer": self.layer})


_HF_DETACHED = "caap_detached_eager"


@contextlib.contextmanager
def _conservative(adapter):
    """Detach attention probabilities and every LayerNorm's 1/std (Ali et al. 2022), all undone on exit.

    timm: non-fused attention (per module) with a hook at ``attn_drop`` that detaches the probabilities.
    Hugging Face: an eager attention function with detached probabilities, registered under its own name in
    ``transformers.AttentionInterface`` and selected through each config for the call only.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(adapter, TimmViTAdapter):
            stack.enter_context(capture_attention(adapter))
            for block in adapter.blocks:
                stack.callback(block.attn.attn_drop.register_forward_hook(lambda m, i, out: out.detach()).remove)
        else:
            from transformers import AttentionInterface

            AttentionInterface.register(_HF_DETACHED, _hf_detached_attention)
            stack.callback(AttentionInterface._global_mapping.pop, _HF_DETACHED, None)
            for config in hf_configs(adapter.model):
                stack.callback(setattr, config, "_attn_implementation", config._attn_implementation)
                config._attn_implementation = _HF_DETACHED
        for module in adapter.model.modules():
            if isinstance(module, nn.LayerNorm):
                stack.callback(module.register_forward_hook(_ln_detached).remove)
        yield


def _hf_detached_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention (as transformers' ``eager_attention_forward``) with the probabilities detached."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # [B, H, N, N]
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = scores.softmax(-1, dtype=torch.float32).to(query.dtype).detach()
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def _ln_detached(module: nn.LayerNorm, args, out):
    x = args[0]
    mean = x.mean(-1, keepdim=True)
    std = (x.var(-1, keepdim=True, unbiased=False) + module.eps).sqrt()
    y = (x - mean) / std.detach()
    if module.weight is not None:
        y = y * module.weight + module.bias
    return y


@register
class LRP(Explainer):
    """Conservative-propagation LRP (Ali et al., ICML 2022, "XAI for Transformers"): gradient × input at the
    token embeddings ``z_0`` with attention probabilities and LayerNorm scales treated as constants;
    ``R[p] = Σ_d z_0[p, d] ∂s_c/∂z_0[p, d]`` on the patch tokens. timm and Hugging Face (transformers >= 5)
    ViTs."""

    name = "lrp"
    resolution = "patch"
    needs_grad = True
    needs_attention = True

    def __init__(self, model, **kwargs) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(self.adapter, (TimmViTAdapter, HFViTAdapter)):
            raise UnsupportedModelError(f"lrp supports timm and Hugging Face ViTs, got {type(self.adapter).__name__}")

    def _explain(self, images, target: TargetLike, *, grid, device, **kwargs) -> Attribution:
        adapter = self.adapter
        with torch.no_grad():
            tgt = resolve_target(target, adapter.forward(images))
        with _conservative(adapter), torch.enable_grad():
            z0 = adapter.embed(images).detach().requires_grad_(True)  # [B, N, D]
            z = z0
            for index in range(adapter.num_blocks):
                z = adapter.run_block(index, z)
            logits = adapter.head(z)
            (grads,) = torch.autograd.grad(logits.gather(1, tgt.to(device)[:, None]).sum(), z0)
        relevance = (z0.detach() * grads).sum(-1)[:, adapter.num_prefix :]  # [B, gh*gw]
        return Attribution(relevance.reshape(-1, *grid).float().cpu(), tgt, tuple(images.shape[-2:]), self.name,
                           meta={"method": self.name})
