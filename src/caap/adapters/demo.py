"""The embedded demo models: small timm ViTs trained on the controlled-evidence benchmark.

Weights ship inside the package (``caap/assets/demo_<variant>.safetensors``, made by
``python -m caap.data.train``), so ``caap demo`` and ``caap explain --model caap-demo`` work offline. Each
model carries its card in timm's ``pretrained_cfg``: normalisation, ``label_names`` (from the training
record ``demo_<variant>.json``) and CAAP's measured default band (``pretrained_cfg["caap"]``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from caap.adapters.weights import load_state_dict
from caap.errors import CaapError

ARCH = dict(img_size=64, patch_size=8, embed_dim=128, depth=6, num_heads=4, mlp_ratio=4.0)
STEM = "ConvPatchEmbed: conv4x4/2 (pad 1), conv2x2/2, conv2x2/2; BatchNorm + GELU between; 32-64-128 channels"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
DEMO_LAYERS = range(0, 4)  # CAAP's band for the demo models, from `caap sweep` on both variants (docs/RESULTS.md)
VARIANTS = ("simple", "conjunction")
DEMO_NAMES = {"caap-demo": "simple", "caap-demo-simple": "simple", "caap-demo-conjunction": "conjunction"}


class ConvPatchEmbed(nn.Module):
    """A convolutional stem in place of the linear patch embedding (a "ViT-hybrid" / early-convolution ViT).

    A 4x4 convolution of stride 2 (padding 1) and two 2x2 convolutions of stride 2 map ``[B, 3, H, W]`` to
    tokens ``[B, (H/8)(W/8), D]`` in row-major grid order. Each token's receptive field is 10x10 px centred
    exactly on its 8x8 cell (1 px into each neighbour), so token ``p`` is patch ``p``. Xiao et al. (2021),
    "Early convolutions help transformers see better": on CPU-sized budgets a plain linear-embedding ViT
    stayed at chance on the benchmark for hundreds of steps where this stem learned at once. BatchNorm in
    eval mode is a per-channel affine map, so tokens stay local.
    """

    def __init__(self, img_size: int = 64, patch_size: int = 8, in_chans: int = 3, embed_dim: int = 128,
                 **_: object) -> None:
        super().__init__()
        if patch_size != 8:
            raise ValueError(f"ConvPatchEmbed has a stride of 8, got patch_size={patch_size}")
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = True
        self.dynamic_img_pad = False
        c = embed_dim // 4
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.GELU(),  # centre 2i + 0.5
            nn.Conv2d(c, 2 * c, 2, 2, 0, bias=False), nn.BatchNorm2d(2 * c), nn.GELU(),  # centre 4j + 1.5
            nn.Conv2d(2 * c, embed_dim, 2, 2, 0),  # centre 8k + 3.5: the middle of cell k
        )

    def feat_ratio(self, as_scalar: bool = True) -> int:
        return self.patch_size[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, gh*gw, D]


def build_demo_architecture(num_classes: int = 10) -> nn.Module:
    """The demo ViT (random init): timm ``VisionTransformer`` with a convolutional stem, 64 px input,
    an 8x8 token grid, 6 blocks of width 128 with 4 heads."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**ARCH, num_classes=num_classes, embed_layer=ConvPatchEmbed)
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
    """The trained demo model for ``variant`` in eval mode; its card (class names, CAAP's default band) is
    in ``pretrained_cfg``."""
    path = weights_path(variant)
    if not path.is_file():
        raise CaapError(f"the embedded demo weights {path} are missing; train them with python -m caap.data.train")
    model = build_demo_architecture()
    model.load_state_dict(load_state_dict(path), strict=True)
    card = model_card(variant)
    model.pretrained_cfg = {**model.pretrained_cfg, "label_names": tuple(card.get("classes") or ()),
                            "caap": {"layers": list(DEMO_LAYERS)}}
    return model.eval()


def model_card(variant: str) -> dict:
    """The training record written next to the weights (architecture, seed, command, accuracy…)."""
    path = weights_path(variant).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> the demo models' normalised float input."""
    x = images.to(torch.float32) / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std
