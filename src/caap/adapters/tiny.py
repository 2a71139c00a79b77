"""Tiny random-init models of every architecture the adapters support: the test suite's models, and a quick way to
check a method of your own on every architecture caap opens (``build(name)`` for each of ``ARCHS``).

Weights are re-drawn with a larger scale than the default init so that attributions are far from zero
and comparisons with the naive loop are meaningful.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

IMG, PATCH, DIM, DEPTH, HEADS, CLASSES = 32, 8, 32, 4, 2, 10
GRID = (IMG // PATCH, IMG // PATCH)


def scale_weights(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 1:  # norm scales near 1
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


def timm_vit(**kwargs) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    base = dict(img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, num_classes=CLASSES)
    return VisionTransformer(**{**base, **kwargs})


def timm_distilled() -> nn.Module:
    from timm.models.deit import VisionTransformerDistilled

    return VisionTransformerDistilled(img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                                      num_classes=CLASSES)


def _conv_stem() -> nn.Module:
    """A small ViT-hybrid: timm ``VisionTransformer`` with caap's convolutional patch embedding."""
    from timm.models.vision_transformer import VisionTransformer

    from caap.adapters.demo import ConvPatchEmbed

    return VisionTransformer(img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                             num_classes=CLASSES, embed_layer=ConvPatchEmbed)


def _hf_kwargs() -> dict:
    return dict(image_size=IMG, patch_size=PATCH, hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                intermediate_size=2 * DIM, num_labels=CLASSES)


def hf(kind: str) -> nn.Module:
    import transformers as tf

    if kind == "vit":
        return tf.ViTForImageClassification(tf.ViTConfig(**_hf_kwargs()))
    if kind == "deit":
        return tf.DeiTForImageClassification(tf.DeiTConfig(**_hf_kwargs()))
    if kind == "deit_teacher":
        return tf.DeiTForImageClassificationWithTeacher(tf.DeiTConfig(**_hf_kwargs()))
    if kind == "dinov2":
        return tf.Dinov2ForImageClassification(tf.Dinov2Config(**_hf_kwargs(), mlp_ratio=2))
    if kind == "dinov2_reg":
        cfg = tf.Dinov2WithRegistersConfig(**_hf_kwargs(), mlp_ratio=2, num_register_tokens=2)
        return tf.Dinov2WithRegistersForImageClassification(cfg)
    raise KeyError(kind)


class TorchViT(nn.Module):
    """A ViT built from torch's own ``nn.TransformerEncoderLayer``: the generic adapter's test subject."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.cls = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos = nn.Parameter(torch.zeros(1, 1 + GRID[0] * GRID[1], DIM))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(DIM, HEADS, 2 * DIM, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(DEPTH)
        )
        self.norm = nn.LayerNorm(DIM)
        self.fc = nn.Linear(DIM, CLASSES)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # [B, gh*gw, D]
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1) + self.pos

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(z).mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        for layer in self.layers:
            z = layer(z)
        return self.head(z)


def generic_adapter(model: TorchViT):
    from caap.adapters import GenericAdapter

    return GenericAdapter(model, model.embed, model.layers, model.head, num_prefix=1, grid=GRID, patch_size=PATCH)


# name -> (factory, number of prefix tokens, forward for the naive reference, blocks)
ARCHS: dict[str, Callable[[], nn.Module]] = {
    "timm_vit": lambda: timm_vit(),
    "timm_deit_distilled": timm_distilled,
    "timm_deit3_no_embed_class": lambda: timm_vit(no_embed_class=True, init_values=0.5),
    "timm_registers": lambda: timm_vit(reg_tokens=3, no_embed_class=True),
    "timm_avg_fc_norm": lambda: timm_vit(global_pool="avg", fc_norm=True, class_token=False),
    "timm_clip_pre_norm": lambda: timm_vit(pre_norm=True),
    "timm_map_pool": lambda: timm_vit(global_pool="map"),
    "timm_conv_stem": lambda: _conv_stem(),
    "hf_vit": lambda: hf("vit"),
    "hf_deit": lambda: hf("deit"),
    "hf_deit_teacher": lambda: hf("deit_teacher"),
    "hf_dinov2": lambda: hf("dinov2"),
    "hf_dinov2_registers": lambda: hf("dinov2_reg"),
    "generic_torch": TorchViT,
}

PREFIX = {
    "timm_vit": 1, "timm_deit_distilled": 2, "timm_deit3_no_embed_class": 1, "timm_registers": 4,
    "timm_avg_fc_norm": 0, "timm_clip_pre_norm": 1, "timm_map_pool": 1, "timm_conv_stem": 1, "hf_vit": 1, "hf_deit": 2,
    "hf_deit_teacher": 2, "hf_dinov2": 1, "hf_dinov2_registers": 3, "generic_torch": 1,
}


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return scale_weights(ARCHS[name](), seed)


def explainable(name: str, model: nn.Module):
    """What to hand to ``caap.CAAP``: the model itself, or a GenericAdapter for the torch-only model."""
    return generic_adapter(model) if name == "generic_torch" else model


def logits_fn(name: str, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's own forward, as images -> logits (independent of caap's adapters)."""
    if name.startswith("hf_"):
        return lambda x: model(pixel_values=x).logits
    return model


def block_list(name: str, model: nn.Module) -> list[nn.Module]:
    """The model's blocks, found independently of caap's adapters."""
    if name.startswith("timm_"):
        return list(model.blocks)
    if name == "generic_torch":
        return list(model.layers)
    backbone = next(getattr(model, a) for a in ("vit", "deit", "dinov2", "dinov2_with_registers") if hasattr(model, a))
    layers = getattr(backbone, "layers", None) or backbone.encoder.layer
    return list(layers)


def run_on(model: nn.Module, x: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """A timm ViT on its prefix tokens and the patch tokens ``keep`` only (in that order), from its own modules."""
    z = model.norm_pre(model._pos_embed(model.patch_embed(x)))  # [1, N, D]
    prefix = model.num_prefix_tokens
    z = torch.cat([z[:, :prefix], z[:, [prefix + p for p in keep]]], 1)
    for block in model.blocks:
        z = block(z)
    return model.forward_head(model.norm(z))
