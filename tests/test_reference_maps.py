"""Our baselines against maps made by the original authors' code (../shared/reference/deit_tiny_dev8,
README there): the real DeiT-Tiny, the 8 stored input tensors and the stored targets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEIT_TINY

from caap import methods

REFERENCE = Path(os.environ.get("CAAP_REFERENCE_DIR",
                                Path(__file__).resolve().parents[2] / "shared" / "reference" / "deit_tiny_dev8"))
pytestmark = pytest.mark.skipif(not (REFERENCE / "inputs.npy").is_file() or not DEIT_TINY.is_file(),
                                reason=f"reference maps not found at {REFERENCE}")


@pytest.fixture(scope="module")
def setting():
    from caap.adapters import create_model

    model = create_model("deit_tiny_patch16_224", DEIT_TINY)
    x = torch.from_numpy(np.load(REFERENCE / "inputs.npy"))  # [8, 3, 224, 224], the authors' exact inputs
    targets = json.loads((REFERENCE / "meta.json").read_text())["targets"]
    return model, x, targets


@pytest.mark.parametrize(("name", "file"), [("rollout", "chefer_rollout.npy"), ("gae", "gae.npy"),
                                            ("raw_attention", "chefer_attn_last_layer.npy")])
def test_attention_baselines_match_the_authors_maps(setting, name, file):
    """Chefer et al.'s rollout ((A + I) row-normalised, start layer 0), GAE (Transformer-MM-Explainability
    notebook) and last-layer attention. Tolerance: 1e-4 of each map's maximum, the float32 noise floor the
    README measures between the authors' model and timm's (logits differ by 1e-5)."""
    model, x, targets = setting
    expected = torch.from_numpy(np.load(REFERENCE / file))  # [8, 14, 14]
    got = methods.get(name)(model).explain(x, target=targets).scores
    scale = expected.flatten(1).abs().amax(1)[:, None, None]
    torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=1e-4)
