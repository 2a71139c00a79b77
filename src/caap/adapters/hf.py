"""Adapters for Hugging Face ``transformers`` image classifiers: ViT, DeiT (with teacher), DINOv2.

``transformers`` is not imported here: models are recognised by class name, and the submodules are
found by attribute, which covers both the ``encoder.layer`` (transformers 4) and ``layers``
(transformers 5) layouts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from caap.adapters.base import Adapter
from caap.core.contexts import IMAGENET_MEAN, IMAGENET_STD, Normalization
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


class HFViTAdapter(Adapter):
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
        self.normalization = normalization or _hf_normalization(name)
        self.head_rows = {"cls": (0,), "cls_dist": (0, 1), "cls_mean": None}[self._head_kind]

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self._blocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        weight = self.backbone.embeddings.patch_embeddings.projection.weight
        return self.backbone.embeddings(images.to(weight.dtype))  # [B, N, D]

    def run_block(self, index: int, z: torch.Tensor) -> torch.Tensor:
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


def _hf_normalization(name: str) -> Normalization:
    if name.startswith("ViT"):  # google/vit-* image processors normalise with 0.5 / 0.5
        return Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return Normalization(IMAGENET_MEAN, IMAGENET_STD)
