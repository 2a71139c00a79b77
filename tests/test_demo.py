"""The embedded demo models: accuracy on fresh images, the occlusion check, ``caap demo`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from caap.adapters.demo import load_demo_model, model_card, normalize_uint8
from caap.cli import main
from caap.data.synthetic import SyntheticConfig, generate, generate_batch, remove_objects

FRESH_SEED = 777_777  # neither the training nor the model card's test seed
TARGET = {"simple": 0.97, "conjunction": 0.90}


def _accuracy(model, images_u8, labels) -> float:
    with torch.inference_mode():
        return float((model(normalize_uint8(images_u8)).argmax(-1) == labels).float().mean())


@pytest.mark.parametrize("variant", ["simple", "conjunction"])
def test_embedded_model_accuracy_on_fresh_images(variant):
    model = load_demo_model(variant)
    batch = generate_batch(SyntheticConfig(variant=variant, seed=FRESH_SEED), 0, 400)
    acc = _accuracy(model, batch["images"], batch["labels"])
    assert acc >= TARGET[variant] - 0.02, acc  # 400 images: allow ~2 standard errors below the target
    card = model_card(variant)
    assert card["test_accuracy"] >= TARGET[variant]
    assert card["architecture"]["depth"] == len(model.blocks)


@pytest.mark.parametrize("variant", ["simple", "conjunction"])
def test_model_uses_the_object_not_the_distractors(variant):
    model = load_demo_model(variant)
    config = SyntheticConfig(variant=variant, seed=FRESH_SEED + 1)
    samples = [generate(config, i) for i in range(200)]
    labels = torch.tensor([s.label for s in samples])

    def acc(images):
        return _accuracy(model, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), labels)

    clean = acc([s.image for s in samples])
    no_object = acc([remove_objects(s, "class") for s in samples])
    no_distractors = acc([remove_objects(s, "distractors") for s in samples])
    assert no_object < 0.3  # near chance (0.1) without the class object
    assert no_distractors > clean - 0.03  # distractors carry no class information


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "4"]) == 0
    printed = capsys.readouterr().out
    assert "pointing game" in printed
    results = json.loads((out / "results.json").read_text())
    assert len(results["records"]) == 4 and 0 <= results["pointing_game"] <= 1
    for name in ["grid.png", "demo_000.png", "demo_003.npy"]:
        assert (out / name).stat().st_size > 0
    assert np.load(out / "demo_000.npy").shape == (8, 8)


def test_demo_conjunction_and_explain_with_caap_demo(tmp_path, capsys):
    assert main(["demo", "--variant", "conjunction", "--out", str(tmp_path / "c"), "--images", "2"]) == 0
    from PIL import Image

    s = generate(SyntheticConfig(seed=5), 0)
    path = tmp_path / "glyph.png"
    Image.fromarray(s.image).save(path)
    assert main(["explain", str(path), "--model", "caap-demo", "--out", str(tmp_path / "e")]) == 0
    record = json.loads((tmp_path / "e" / "results.json").read_text())["images"][0]
    assert record["grid"] == [8, 8] and record["class_names"][0] in SyntheticConfig().classes


def test_conv_stem_token_sees_its_own_cell():
    """Token (i, j) of the demo stem depends on a 10x10 px window centred on its 8x8 cell."""
    from caap.adapters.demo import build_demo_architecture

    model = build_demo_architecture().eval()
    for i, j in [(0, 0), (3, 5), (7, 7)]:
        x = torch.zeros(1, 3, 64, 64, requires_grad=True)
        model.patch_embed(x)[0, i * 8 + j].sum().backward()
        rows, cols = torch.nonzero(x.grad.abs().sum(1)[0] > 0, as_tuple=True)
        assert (rows.min(), rows.max()) == (max(0, 8 * i - 1), min(63, 8 * i + 8))
        assert (cols.min(), cols.max()) == (max(0, 8 * j - 1), min(63, 8 * j + 8))


def test_demo_models_carry_their_measured_band():
    from caap import CAAP
    from caap.adapters.demo import load_demo_model

    model = load_demo_model("conjunction")
    assert CAAP(model).layers == [0, 1, 2, 3]  # from the layer sweep (docs/RESULTS.md)
    assert CAAP(model, layers="2:4").layers == [2, 3]


@pytest.mark.parametrize(("variant", "pearson"), [("simple", 0.85), ("conjunction", 0.55)])
def test_fast_mode_on_the_demo_models(variant, pearson):
    """The demo models are where the fast mode is weakest (65 tokens, a 4-block band, evidence that needs
    parts together): measured on 32 images, Pearson 0.91 / 0.65 with exact and the top patch still on the
    object in 94 % / 97 % of images (docs/FAST.md); the thresholds sit below those figures."""
    from caap import CAAP
    from caap.data.synthetic import SyntheticConfig, generate_batch
    from caap.methods.caap import FastCAAP
    from caap.metrics import pointing_game_hits

    model = load_demo_model(variant)
    batch = generate_batch(SyntheticConfig(variant=variant, seed=5), 0, 32)
    x = normalize_uint8(batch["images"])
    exact = CAAP(model).explain(x)
    fast = FastCAAP(model).explain(x, target=exact.target)
    r = [torch.corrcoef(torch.stack([e.flatten(), f.flatten()]))[0, 1] for e, f in zip(exact.scores, fast.scores,
                                                                                        strict=True)]
    assert float(torch.stack(r).mean()) >= pearson
    assert pointing_game_hits(fast.scores, batch["masks"]).float().mean() >= 0.9
