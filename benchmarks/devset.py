"""What the per-image benchmark scripts share: the real DeiT-Tiny and the 200 ImageNet dev images from
``$CAAP_DATA_DIR`` (default ``../shared/data``), and a resumable loop that writes one JSON record per image."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from timm.data import create_transform, resolve_model_data_config
from tqdm import tqdm

from caap.adapters import create_model
from caap.data.datasets import ImageFolder, Item
from caap.io import save_json

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CAAP_DATA_DIR", ROOT.parent / "shared" / "data"))


def real_deit_tiny(every: int = 1, limit: int | None = None):
    """``(model, data, indices)``: DeiT-Tiny with its real weights, the dev images with its transform, and the
    positions of every ``every``-th image (at most ``limit``)."""
    model = create_model("deit_tiny_patch16_224", DATA / "deit_tiny_patch16_224.safetensors")
    data = ImageFolder(DATA / "imagenet-dev", create_transform(**resolve_model_data_config(model)))
    return model, data, list(range(0, len(data), every))[:limit]


def resumable(data: ImageFolder, indices: Sequence[int], records: Path,
              make: Callable[[Item], dict]) -> dict[int, dict]:
    """``{index: record}``: ``make(item)`` for every image without a record in ``records/`` (each written
    atomically as ``<index>.json`` as soon as it exists, so a killed run resumes), then all read back."""
    for i in tqdm(indices, desc="images"):
        path = records / f"{i:06d}.json"
        if not path.is_file():
            item = data[i]
            save_json(path, {"index": i, "id": item.id, **make(item)})
    return {i: json.loads((records / f"{i:06d}.json").read_text()) for i in indices}
