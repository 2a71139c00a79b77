"""Any input size the model takes (issue 26): timm models built for another size with their weights' position
embeddings resampled exactly as timm resamples them, and the grid read from the model."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from conftest import DEIT_TINY, needs_real_data
from PIL import Image
from safetensors.torch import save_file

from caap import CAAP
from caap.adapters import create_model, model_data_config
from caap.cli import main
from caap.errors import CaapError


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False)  # 160 px, patch 16
    path = tmp_path_factory.mktemp("w") / "test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_resampled_weights_predict_as_timms_own_resampling(weights):
    ours = create_model("test_vit", weights, img_size=224)
    theirs = timm.create_model("test_vit", pretrained=True, pretrained_cfg_overlay={"file": str(weights)},
                               img_size=224).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    assert model_data_config(ours)["input_size"] == (3, 224, 224)
    att = CAAP(ours, layers=[1]).explain(x[:1])
    assert att.scores.shape == (1, 14, 14)  # the grid from the model: 224 / 16
    rect = create_model("test_vit", weights, img_size=(160, 224))
    assert CAAP(rect, layers=[1]).explain(torch.randn(1, 3, 160, 224)).scores.shape == (1, 10, 14)
    with pytest.raises(CaapError, match="img_size"):
        create_model("caap-demo", img_size=128)


def test_the_cli_takes_an_input_size(weights, tmp_path, capsys):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 90, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["explain", str(tmp_path / "a.png"), "--model", "test_vit", "--weights", str(weights), "--img-size",
                 "192", "--method", "caap:layers=1:2", "--out", str(tmp_path / "out")]) == 0
    assert np.load(tmp_path / "out" / "a.caap.npy").shape == (12, 12)
    assert main(["explain", str(tmp_path / "a.png"), "--model", "test_vit", "--img-size", "x", "--out",
                 str(tmp_path / "o")]) == 2
    assert "expected N or HxW" in capsys.readouterr().err


@needs_real_data
def test_the_real_deit_tiny_at_384_predicts_as_timm_resamples_it():
    ours = create_model("deit_tiny_patch16_224", DEIT_TINY, img_size=384)
    theirs = timm.create_model("deit_tiny_patch16_224", pretrained=True, img_size=384,
                               pretrained_cfg_overlay={"file": str(DEIT_TINY)}).eval()
    x = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
