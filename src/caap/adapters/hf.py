"""Adapters for Hugging Face ``transformers`` image classifiers: ViT, DeiT (with teacher), DINOv2.

``transformers`` is imported only where a capability needs it: models are recognised by class name, and
the submodules are found by attribute, which covers both the ``encoder.layer`` (transformers 4) and
``layers`` (transformers 5) layouts. The model card is the model's ``config`` (``id2label``) and, when the
model was loaded from a folder, its image-processor config (``preprocessor_config.json``: mean and std).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from caap.adapters.attention import AttentionMaps, detach_layernorm_scales, eager_capture
from caap.adapters.base import Adapter
from caap.adapters.capabilities import AttentionCapture, BlockViews, LinearRules
from caap.adapters.card import ModelCard
from caap.adapters.normalization import hf_normalization
from caap.adapters.views import BlockView, LinearBlock, LinearHead, split_heads
from caap.core.contexts import Normalization
from caap.errors import UnsupportedModelError

# class name -> (backbone attribute, head kind: class token, class + distillation tokens, class + patch mean)
HF_MODELS: dict[str, tuple[str, str]] = {
    "ViTForImageClassification": ("vit", "cls"),
    "DeiTForImageClassification": ("deit", "cls"),
    "DeiTForImageClassificationWithTeacher": ("deit", "cls_dist"),
    "Dinov2ForImageClassification": ("dinov2", "cls_mean"),
    "Dinov2WithRegistersForImageClassification": ("dinov2_with_registers", "cls_mean"),
}


def is_hf_classifier(model: nn.Module) -> bool:
    return type(model).__name__ in HF_MODELS and type(model).__module__.startswith("transformers.")


class HFViTAdapter(Adapter, AttentionCapture, BlockViews, LinearRules):
    """A Hugging Face ``*ForImageClassification`` ViT, DeiT or DINOv2 model."""

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        name = type(model).__name__
        if name not in HF_MODELS:
            raise UnsupportedModelError(
                f"HFViTAdapter supports {sorted(HF_MODELS)}, got {name}; use caap.adapters.GenericAdapter"
            )
        attr, self._head_kind = HF_MODELS[name]
        self.model = model
        self.backbone = getattr(model, attr)
        self.config = model.config
        self._blocks = _find_layers(self.backbone, name)
        self.num_registers = int(getattr(self.config, "num_register_tokens", 0) or 0)
        distilled = name.startswith("DeiT")
        self.num_prefix = 1 + int(distilled) + self.num_registers
        self.normalization = normalization or hf_normalization(model)
        self.head_rows = {"cls": (0,), "cls_dist": (0, 1), "cls_mean": None}[self._head_kind]

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self._blocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        weight = self.backbone.embeddings.patch_embeddings.projection.weight
        return self.backbone.embeddings(images.to(weight.dtype))  # [B, N, D]

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        out = self._blocks[index](z)
        return out[0] if isinstance(out, tuple) else out

    def head(self, z: torch.Tensor) -> torch.Tensor:
        seq = self.backbone.layernorm(z)  # [B, N, D]
        m = self.model
        if self._head_kind == "cls":
            return m.classifier(seq[:, 0, :])
        if self._head_kind == "cls_dist":
            return (m.cls_classifier(seq[:, 0, :]) + m.distillation_classifier(seq[:, 1, :])) / 2
        cls_token = seq[:, 0]  # [B, D]
        patch_tokens = seq[:, self.num_prefix :]  # [B, gh*gw, D]
        return m.classifier(torch.cat([cls_token, patch_tokens.mean(dim=1)], dim=1))

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        ph, pw = self.patch_size
        h, w = input_size
        expected = _pair(self.config.image_size)
        if self._head_kind != "cls_mean" and (h, w) != expected:  # DINOv2 interpolates its positions
            raise UnsupportedModelError(f"input size {(h, w)} does not match the model's image_size {expected}")
        return (h // ph, w // pw)

    @property
    def patch_size(self) -> tuple[int, int]:
        return _pair(self.config.patch_size)

    # --- the model card: the config's labels and image size ----------------------------------------------
    def _read_card(self) -> ModelCard:
        classes = int(self.config.num_labels)
        labels = getattr(self.config, "id2label", None) or {}
        names = [labels.get(i, labels.get(str(i))) for i in range(classes)]
        if not names or any(n is None for n in names) or all(str(n) == f"LABEL_{i}" for i, n in enumerate(names)):
            names = None
        return ModelCard(tuple(str(n) for n in names) if names else None, classes, _pair(self.config.image_size))

    def head_modules(self) -> list[nn.Module]:
        return self._modules_named(("classifier", "cls_classifier", "distillation_classifier"))

    def block_view(self, index: int) -> BlockView:
        """ViT / DeiT layers (``layernorm_before`` … ``layernorm_after``) and DINOv2 layers (``norm1``,
        ``layer_scale1`` …); dropout and drop path are identities in eval mode, where methods run."""
        layer = self._blocks[index]
        attn = getattr(layer, "attention", None)
        if attn is None or not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "scaling")):
            raise self.unsupported(f"block_view for layer {index} ({type(layer).__name__}: q/k/v/o projections "
                                   "are needed)")
        heads, head_dim = attn.num_attention_heads, attn.head_dim

        def qkv(y: torch.Tensor):
            return (split_heads(attn.q_proj(y), heads), split_heads(attn.k_proj(y), heads),
                    split_heads(attn.v_proj(y), heads))

        if hasattr(layer, "layernorm_before"):  # ViT, DeiT
            return BlockView(heads, head_dim, float(attn.scaling), layer.layernorm_before, qkv, attn.o_proj,
                             nn.Identity(), layer.layernorm_after, layer.mlp, nn.Identity())
        if hasattr(layer, "layer_scale1"):  # DINOv2 (with registers)
            return BlockView(heads, head_dim, float(attn.scaling), layer.norm1, qkv, attn.o_proj, layer.layer_scale1,
                             layer.norm2, layer.mlp, layer.layer_scale2)
        raise self.unsupported(f"block_view for layer {index} ({type(layer).__name__})")

    def linear_block(self, index: int) -> LinearBlock:
        view = self.block_view(index)
        layer = self._blocks[index]
        attn, mlp = layer.attention, layer.mlp
        if not all(isinstance(getattr(mlp, n, None), nn.Linear) for n in ("fc1", "fc2")):
            raise self.unsupported(f"linear_block for layer {index} ({type(mlp).__name__}: an MLP of fc1 and fc2 "
                                   "is needed)")
        scales = [getattr(getattr(layer, n, None), "lambda1", None) for n in ("layer_scale1", "layer_scale2")]
        return LinearBlock(view, (attn.q_proj, attn.k_proj, attn.v_proj), attn.o_proj, mlp.fc1, mlp.activation_fn,
                           mlp.fc2, *scales)

    def linear_head(self) -> LinearHead:
        m = self.model
        if self._head_kind == "cls_dist":
            return LinearHead(self.backbone.layernorm, "distilled", nn.Identity(), m.cls_classifier,
                              m.distillation_classifier)
        pool = {"cls": "token", "cls_mean": "token+mean"}[self._head_kind]
        return LinearHead(self.backbone.layernorm, pool, nn.Identity(), m.classifier)

    def _configs(self) -> list:
        """The distinct config objects of the model and its submodules (they select attention)."""
        return list({id(m.config): m.config for m in self.model.modules() if hasattr(m, "config")}.values())

    def capture_attention(self) -> contextlib.AbstractContextManager[AttentionMaps]:
        """Eager attention for the capture; the weights read from each attention module's output
        (:func:`eager_capture`)."""
        modules = [(index, module) for index, block in enumerate(self.blocks) for module in block.modules()
                   if type(module).__name__.endswith("Attention")]
        return eager_capture(self.model, modules, AttentionMaps(self.num_blocks))

    @contextlib.contextmanager
    def conservative(self) -> Iterator[None]:
        """An eager attention function with detached probabilities, registered under its own name in
        ``transformers.AttentionInterface`` and selected through each config for the call only."""
        from transformers import AttentionInterface

        with contextlib.ExitStack() as stack:
            AttentionInterface.register(_HF_DETACHED, _detached_attention)
            stack.callback(AttentionInterface._global_mapping.pop, _HF_DETACHED, None)
            for config in self._configs():
                stack.callback(setattr, config, "_attn_implementation", config._attn_implementation)
                config._attn_implementation = _HF_DETACHED
            detach_layernorm_scales(self.model, stack)
            yield


_HF_DETACHED = "caap_detached_eager"


def _detached_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention (as transformers' ``eager_attention_forward``) with the probabilities detached."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # [B, H, N, N]
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = scores.softmax(-1, dtype=torch.float32).to(query.dtype).detach()
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _find_layers(backbone: nn.Module, name: str) -> Sequence[nn.Module]:
    for path in ("layers", "encoder.layer", "encoder.layers"):
        obj = backbone
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise UnsupportedModelError(f"{name}: found no transformer layers at .layers or .encoder.layer")
