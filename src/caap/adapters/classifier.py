"""Any image classifier, for the model-agnostic methods: a ConvNeXt, a ResNet, or a ViT caap has no adapter for.

Saliency, input × gradient, integrated gradients, SmoothGrad, occlusion, input insertion, RISE, extremal
perturbations and MDA (ordered by a model-agnostic method) need only ``images -> logits``; the methods that read
a ViT's tokens, blocks or attention raise one line naming what this adapter lacks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from caap.adapters.base import Adapter
from caap.adapters.card import ModelCard
from caap.adapters.normalization import model_normalization
from caap.adapters.timm_families import patch_merging
from caap.core.contexts import Normalization
from caap.errors import CaapError


class ClassifierAdapter(Adapter):
    """``images [B, 3, H, W] -> logits [B, C]`` of any ``nn.Module`` (outputs with ``.logits``, as Hugging Face's,
    are read there).

    Args:
        model: the classifier.
        cell: side in pixels (an int or ``(h, w)``) of the grid cells on which patch-resolution methods
            (occlusion, input insertion) and patch metrics work; default 16 (the usual ViT patch).
        normalization: the model's input mean/std; default: the model's own config (timm ``pretrained_cfg``,
            a Hugging Face image-processor config), else ImageNet's.
    """

    tokens = False
    num_prefix = 0
    head_rows = None

    def __init__(self, model: nn.Module, cell: int | tuple[int, int] = 16,
                 normalization: Normalization | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise CaapError(f"ClassifierAdapter needs a torch nn.Module, got {type(model).__name__}")
        cells = (cell, cell) if isinstance(cell, int) else tuple(cell)
        if len(cells) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in cells):
            raise CaapError(f"cell must be a positive int or (h, w) of pixels, got {cell!r}")
        self.model = model
        self._cell = cells
        self.normalization = normalization or model_normalization(model)
        self.why = patch_merging(model)  # a transformer that merges patches: what the ViT methods lack

    def unsupported(self, capability: str):
        error = super().unsupported(capability)
        return type(error)(f"{error} ({self.why})") if self.why else error

    @property
    def blocks(self) -> Sequence[nn.Module]:
        raise self.unsupported("transformer blocks (a ViT's token embeddings, blocks and head)")

    def _read_card(self) -> ModelCard:
        n = getattr(self.model, "num_classes", None) or getattr(getattr(self.model, "config", None), "num_labels", None)
        labels = getattr(getattr(self.model, "config", None), "id2label", None)
        names = tuple(str(labels[i]) for i in sorted(labels)) if isinstance(labels, dict) and labels else None
        return ModelCard(names, int(n) if isinstance(n, int) else None)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        raise self.unsupported("embed (a ViT's token embeddings)")

    def head(self, z: torch.Tensor) -> torch.Tensor:
        raise self.unsupported("head (a ViT's head on tokens)")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images)
        out = getattr(out, "logits", out)
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CaapError(f"{type(self.model).__name__} must return logits [B, C], got {got}")
        return out

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        return (-(-input_size[0] // self._cell[0]), -(-input_size[1] // self._cell[1]))

    @property
    def patch_size(self) -> tuple[int, int]:
        return self._cell

    def head_modules(self) -> list[nn.Module]:
        return self._modules_named(("head", "fc", "classifier"))
