from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """Real test data: ``$CAAP_DATA_DIR`` or ``../shared/data`` beside the project."""
    return Path(os.environ.get("CAAP_DATA_DIR", ROOT.parent / "shared" / "data"))


DEIT_TINY = shared_data() / "deit_tiny_patch16_224.safetensors"
DEV_IMAGES = shared_data() / "imagenet-dev"

needs_real_data = pytest.mark.skipif(
    not (DEIT_TINY.is_file() and DEV_IMAGES.is_dir()), reason=f"real test data not found at {shared_data()}"
)

# Settings that keep the slow methods quick on the tiny test models (every parametrised method test uses them).
FAST = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 3}, "rise": {"masks": 16},
        "tis": {"masks": 16}, "token_rise": {"masks": 16},
        "extremal_perturbation": {"steps": 3, "smoothing": 5.0, "step": 4},
        "bidirectional": {"steps": 3}, "mda": {"segments": "grid", "candidates": 3, "blur_start": 3}}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield
