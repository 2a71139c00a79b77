"""The backbone zoo of the controlled-evidence benchmark: the demo recipe (64 px, 8 × 8 tokens, 6 blocks of width
128, 4 heads, the convolutional stem of :class:`~caap.adapters.demo.ConvPatchEmbed`) on the architectures the
adapters support beyond the plain ViT, so that claims about "ViT backbones" can be tested where the evidence is
known exactly.

=============  =======================================================================================
``vit``        the demo model: timm ViT, class token
``deit3``      DeiT-3 style: layer scale (init 1e-1), position embedding without the class token
``reg_avg``    4 registers, average pooling of the patch tokens, ``fc_norm``
``clip``       CLIP style: LayerNorm before the blocks (``norm_pre``), class token
``eva``        timm Eva: 2-D rotary position embeddings, SwiGLU MLP, layer scale, average pooling
=============  =======================================================================================

Every member is trained by ``python -m caap.data.train --arch NAME --variant VARIANT`` (seeded) and loads with
``create_model("caap-zoo-NAME", weights=FILE)``. A Hugging Face DINOv2 is not in the zoo: the convolutional
stem cannot be expressed in its ``config.json``, and a linear patch embedding does not learn the benchmark on
this budget (docs/DEMO_MODEL.md).
"""

from __future__ import annotations

from torch import nn

from caap.adapters.demo import ARCH, MEAN, STD, ConvPatchEmbed
from caap.errors import CaapError

BACKBONES = ("vit", "deit3", "reg_avg", "clip", "eva")
ZOO_PREFIX = "caap-zoo-"


def _card(model: nn.Module, num_classes: int) -> nn.Module:
    model.pretrained_cfg = {"input_size": (3, ARCH["img_size"], ARCH["img_size"]), "interpolation": "bilinear",
                            "crop_pct": 1.0, "crop_mode": "center", "mean": MEAN, "std": STD,
                            "num_classes": num_classes}
    return model


def build_backbone(arch: str, num_classes: int = 10) -> nn.Module:
    """A random-init member of the zoo (see the module docstring), with its card in ``pretrained_cfg``."""
    if arch not in BACKBONES:
        raise CaapError(f"unknown zoo backbone {arch!r}; expected one of {', '.join(BACKBONES)}")
    if arch == "eva":
        from timm.models.eva import Eva

        model = Eva(**{k: v for k, v in ARCH.items() if k != "mlp_ratio"}, mlp_ratio=4 * 2 / 3, swiglu_mlp=True,
                    use_rot_pos_emb=True, use_abs_pos_emb=False, ref_feat_shape=(8, 8), init_values=0.1,
                    global_pool="avg", num_classes=num_classes)
        stem = ConvPatchEmbed(img_size=ARCH["img_size"], patch_size=ARCH["patch_size"], embed_dim=ARCH["embed_dim"])
        model.patch_embed.proj = stem.proj  # [B, 3, 64, 64] -> [B, D, 8, 8], as the linear projection it replaces
        return _card(model, num_classes)
    from timm.models.vision_transformer import VisionTransformer

    extra = {"vit": {}, "deit3": {"init_values": 0.1, "no_embed_class": True},
             "reg_avg": {"reg_tokens": 4, "global_pool": "avg", "fc_norm": True, "class_token": False},
             "clip": {"pre_norm": True}}[arch]
    model = VisionTransformer(**ARCH, num_classes=num_classes, embed_layer=ConvPatchEmbed, **extra)
    return _card(model, num_classes)


def zoo_arch(name: str) -> str | None:
    """``"caap-zoo-deit3"`` -> ``"deit3"``; None for other names."""
    return name[len(ZOO_PREFIX):] if name.startswith(ZOO_PREFIX) else None
