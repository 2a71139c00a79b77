"""The input normalisation a model expects, from its own configuration (never guessed from its class)."""

from __future__ import annotations

from torch import nn

from caap.adapters.hub import processor_config
from caap.core.contexts import IMAGENET_MEAN, IMAGENET_STD, Normalization
from caap.errors import UnsupportedModelError


def timm_normalization(model: nn.Module) -> Normalization:
    """Mean and std of a timm model's ``pretrained_cfg`` (ImageNet's when it has none)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean and std:
        return Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    return Normalization()


def hf_normalization(model: nn.Module) -> Normalization:
    """Mean and std from the model's image-processor config (``preprocessor_config.json`` in the folder it was
    loaded from, or in the local hub cache of its repository); ImageNet's when it has none. Never guessed from
    the model's class: a google/vit-* checkpoint without its processor config is the user's to describe
    (``normalization=Normalization((0.5,) * 3, (0.5,) * 3)``)."""
    cfg = processor_config(model)
    if cfg is None:
        return Normalization(IMAGENET_MEAN, IMAGENET_STD)
    try:
        return Normalization(tuple(float(v) for v in cfg["image_mean"]), tuple(float(v) for v in cfg["image_std"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsupportedModelError(f"cannot read image_mean/image_std from the model's image-processor config "
                                    f"({type(exc).__name__}: {exc})") from None


def model_normalization(model: nn.Module) -> Normalization:
    """timm's card for a timm model, else the Hugging Face image-processor config (else ImageNet's)."""
    return timm_normalization(model) if getattr(model, "pretrained_cfg", None) else hf_normalization(model)
