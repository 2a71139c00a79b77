"""The embedded demo models: small timm ViTs trained on the controlled-evidence benchmark.

Weights ship inside the package (``caap/assets/demo_<variant>.safetensors``, made by
``python -m caap.data.train``), so ``caap demo`` and ``caap explain --model caap-demo`` work offline.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from torch import nn

from caap.data.synthetic import VARIANTS, SyntheticConfig
from caap.errors import CaapError

ARCH = dict(img_size=64, patch_size=8, embed_dim=128, depth=6, num_heads=4, mlp_ratio=4.0)
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
DEMO_NAMES = {"caap-demo": "simple", "caap-demo-simple": "simple", "caap-demo-conjunction": "conjunction"}


def build_demo_architecture(num_classes: int = 10) -> nn.Module:
    """The demo ViT (random init): timm ``VisionTransformer``, 64 px, 8 px patches, 6 blocks, width 128."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**ARCH, num_classes=num_classes)
    model.pretrained_cfg = {
        "input_size": (3, ARCH["img_size"], ARCH["img_size"]), "interpolation": "bilinear", "crop_pct": 1.0,
        "crop_mode": "center", "mean": MEAN, "std": STD, "num_classes": num_classes,
    }
    return model


def assets() -> Path:
    return Path(str(resources.files("caap") / "assets"))


def weights_path(variant: str) -> Path:
    if variant not in VARIANTS:
        raise CaapError(f"unknown demo variant {variant!r}; expected one of {VARIANTS}")
    return assets() / f"demo_{variant}.safetensors"


def load_demo_model(variant: str = "simple") -> nn.Module:
    """The trained demo model for ``variant`` in eval mode, with ``caap_class_names`` set."""
    from caap.models import load_state_dict

    path = weights_path(variant)
    if not path.is_file():
        raise CaapError(f"the embedded demo weights {path} are missing; train them with python -m caap.data.train")
    model = build_demo_architecture()
    model.load_state_dict(load_state_dict(path), strict=True)
    model.caap_class_names = list(SyntheticConfig(variant=variant).classes)
    return model.eval()


def model_card(variant: str) -> dict:
    """The training record written next to the weights (architecture, seed, command, accuracy…)."""
    path = weights_path(variant).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}


def normalize_uint8(images) -> torch.Tensor:  # noqa: F821
    """uint8 ``[B, 3, H, W]`` -> the demo models' normalised float input."""
    import torch

    x = images.to(torch.float32) / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std
