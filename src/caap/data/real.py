"""The real data the benchmark scripts use when it is at hand: a real ImageNet DeiT-Tiny and ImageNet dev images
(``deit_tiny_patch16_224.safetensors`` and ``imagenet-dev/`` in ``$CAAP_DATA_DIR``, else in ``../shared/data``
beside the checkout a script runs from). Nothing here downloads anything; absent data is said in one line."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from caap.errors import CaapError

WEIGHTS = "deit_tiny_patch16_224.safetensors"
DEV = "imagenet-dev"


def data_dir(checkout: str | Path | None = None) -> Path:
    """``$CAAP_DATA_DIR``, else ``shared/data`` beside ``checkout`` (default: the current folder's parent)."""
    if os.environ.get("CAAP_DATA_DIR"):
        return Path(os.environ["CAAP_DATA_DIR"])
    return Path(checkout or Path.cwd()).resolve().parent / "shared" / "data"


def has_real_data(folder: str | Path | None = None) -> bool:
    folder = Path(folder) if folder is not None else data_dir()
    return (folder / WEIGHTS).is_file() and (folder / DEV).is_dir()


def real_deit(folder: str | Path | None = None, **options) -> nn.Module:
    """The real DeiT-Tiny in eval mode (``options``: :func:`caap.adapters.create_model`'s, e.g. ``img_size``); a
    one-line error when its weights are not there."""
    from caap.adapters import create_model

    folder = Path(folder) if folder is not None else data_dir()
    if not (folder / WEIGHTS).is_file():
        raise CaapError(f"no real DeiT-Tiny at {str(folder / WEIGHTS)!r}; set CAAP_DATA_DIR to the folder holding it")
    return create_model("deit_tiny_patch16_224", folder / WEIGHTS, **options)


def dev_files(folder: str | Path | None = None) -> list[Path]:
    """The dev images, sorted (one per class for every 5th ImageNet class, label in the name)."""
    folder = Path(folder) if folder is not None else data_dir()
    return sorted((folder / DEV).glob("*.JPEG"))


def dev_batch(model: nn.Module, files: list[Path]) -> torch.Tensor:
    """``[n, 3, H, W]``: ``files`` preprocessed as ``model`` expects (its own data config)."""
    from caap.adapters import model_transform
    from caap.data.images import load_image

    transform = model_transform(model)
    return torch.stack([transform(load_image(f)) for f in files])
