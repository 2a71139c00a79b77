"""Hugging Face models in every command (issue 15): local folders (transformers and timm format), ``hf-hub:``
names from a local cache, a fast one-line failure offline, and preprocessing from the model's own config."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from archs import ARCHS
from PIL import Image

from caap.adapters import adapt, create_model, model_data_config
from caap.cli import main
from caap.errors import CaapError

PROCESSOR = {"do_resize": True, "size": {"height": 32, "width": 32}, "resample": 2, "do_normalize": True,
             "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "image_processor_type": "ViTImageProcessor"}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny transformers ViT with its image-processor config, as ``save_pretrained`` writes it."""
    folder = tmp_path_factory.mktemp("hf_vit")
    torch.manual_seed(0)
    model = ARCHS["hf_vit"]()
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return folder, model.eval()


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch, hf_folder):
    """A local Hugging Face cache holding ``caap-test/tiny-vit`` (the layout ``snapshot_download`` writes)."""
    import huggingface_hub.constants as constants

    snapshot = tmp_path / "models--caap-test--tiny-vit" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for f in hf_folder[0].iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (tmp_path / "models--caap-test--tiny-vit" / "refs").mkdir()
    (tmp_path / "models--caap-test--tiny-vit" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def _same_outputs(a, b, size=32):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(adapt(a).forward(x), adapt(b).forward(x))


def test_a_local_transformers_folder_loads_with_its_preprocessing(hf_folder):
    folder, original = hf_folder
    model = create_model(str(folder))
    _same_outputs(model, original)
    cfg = model_data_config(model)
    assert cfg["input_size"] == (3, 32, 32) and cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["crop_mode"] == "squash" and cfg["interpolation"] == "bilinear"
    assert adapt(model).normalization.mean == (0.5, 0.5, 0.5)  # decides the black / blur / noise contexts


def test_without_a_processor_config_the_default_is_stated_not_guessed(tmp_path):
    torch.manual_seed(0)
    model = ARCHS["hf_vit"]()  # a ViTForImageClassification: the old guess from the class name gave 0.5 / 0.5
    model.save_pretrained(tmp_path)
    loaded = create_model(str(tmp_path))
    cfg = model_data_config(loaded)
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406)) and "no image-processor config" in cfg["source"]
    assert adapt(loaded).normalization.mean == pytest.approx((0.485, 0.456, 0.406))


def test_a_timm_model_in_hugging_face_format_loads(tmp_path):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    args = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10}
    original = timm.create_model("vit_tiny_patch16_224", pretrained=False, **args).eval()
    save_for_hf(original, tmp_path, model_args=args, safe_serialization=True)
    model = create_model(str(tmp_path))
    _same_outputs(model, original)
    cfg = model_data_config(model)
    assert cfg["input_size"] == (3, 32, 32) and cfg["mean"] == pytest.approx(original.pretrained_cfg["mean"])


def test_hf_hub_names_load_from_the_local_cache_without_a_network(hub_cache, hf_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = create_model("hf-hub:caap-test/tiny-vit")
    _same_outputs(model, hf_folder[1])
    assert model_data_config(model)["mean"] == (0.5, 0.5, 0.5)  # the processor config found in the cache


@pytest.mark.parametrize("offline", ["env", "unreachable"])
def test_a_missing_hub_model_fails_at_once_with_one_line(hub_cache, monkeypatch, offline):
    from caap.adapters import hub

    if offline == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(hub, "_reachable", lambda: False)
    start = time.perf_counter()
    with pytest.raises(CaapError, match="not in the local Hugging Face cache") as err:
        create_model("hf-hub:caap-test/missing-model")
    assert time.perf_counter() - start < 5 and "\n" not in str(err.value)
    with pytest.raises(CaapError, match="weights does not apply"):
        create_model("hf-hub:caap-test/tiny-vit", weights="w.safetensors")
    with pytest.raises(CaapError, match="ORG/NAME"):
        create_model("hf-hub:no-slash")


def test_every_command_takes_a_hugging_face_model(hf_folder, hub_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    picture = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(picture)
    folder = tmp_path / "images" / "class_a"
    folder.mkdir(parents=True)
    Image.open(picture).save(folder / "a.png")
    for model in (str(hf_folder[0]), "hf-hub:caap-test/tiny-vit"):
        for args in (["explain", picture, "--layers", "1:3"], ["compare", picture, "--methods", "gae,saliency"],
                     ["bench", "--data", tmp_path / "images", "--methods", "gae", "--metrics", "deletion:step=4"],
                     ["sweep", "--data", tmp_path / "images", "--starts", "0", "--widths", "1", "--contexts", "mean",
                      "--metrics", "deletion:step=4"]):
            out = tmp_path / f"out{abs(hash((model, args[0])))}"
            code = main([str(a) for a in [*args, "--model", model, "--out", out]])
            err = capsys.readouterr().err
            assert code == 0, (model, args[0], err)
    code = main(["explain", str(picture), "--model", "hf-hub:caap-test/nothing-here", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not in the local Hugging Face cache" in err
