"""``caap explain``: good paths on every image kind, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from caap.cli import main

MODEL = "test_vit"  # a real timm architecture name: 160 px, 16 px patches, 6 blocks, 1000 classes


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(MODEL, pretrained=False)
    path = tmp_path_factory.mktemp("w") / "test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    files = {}
    files["rgb"] = root / "rgb.png"
    Image.fromarray(rgb).save(files["rgb"])
    files["jpeg"] = root / "photo.jpg"
    Image.fromarray(rgb).save(files["jpeg"], quality=90)
    files["grey"] = root / "grey.png"
    Image.fromarray(rgb[..., 0]).save(files["grey"])
    files["cmyk"] = root / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(files["cmyk"])
    files["rgba"] = root / "rgba.png"
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(files["rgba"])
    files["palette"] = root / "palette.gif"
    Image.fromarray(rgb).convert("P").save(files["palette"])
    files["grey16"] = root / "grey16.png"
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(files["grey16"])
    files["text"] = root / "notes.png"
    files["text"].write_text("not an image")
    files["truncated"] = root / "truncated.jpg"
    files["truncated"].write_bytes(files["jpeg"].read_bytes()[:400])
    return files


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_explain_writes_png_npy_and_results(weights, pictures, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(["explain", pictures["rgb"], pictures["jpeg"], "--model", MODEL, "--weights", weights,
                             "--layers", "2:4", "--out", out], capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["layers"] == [2, 3] and results["settings"]["model"] == MODEL
    assert [r["png"] for r in results["images"]] == ["rgb.caap.png", "photo.caap.png"]
    for record in results["images"]:
        scores = np.load(out / record["npy"])
        assert scores.shape == (10, 10)
        assert record["map_max"][0] == pytest.approx(float(scores.max()))
        assert Image.open(out / record["png"]).size[0] > 300
        assert record["class_names"][0]  # ImageNet names for a 1000-class head
    assert "explained 2 image(s)" in stdout


def test_explain_matches_the_library(weights, pictures, tmp_path, capsys):
    import timm
    from timm.data import create_transform, resolve_model_data_config

    from caap import CAAP
    from caap.adapters import create_model
    from caap.data.images import load_image

    out = tmp_path / "o"
    assert run(["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--target", "7",
                "--context", "blur:4", "--out", out], capsys)[0] == 0
    model = create_model(MODEL, weights)
    assert isinstance(model, timm.models.VisionTransformer)
    x = create_transform(**resolve_model_data_config(model))(load_image(pictures["rgb"]))[None]
    expected = CAAP(model, context="blur:4").explain(x, target=7).scores[0]
    np.testing.assert_allclose(np.load(out / "rgb.caap.npy"), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["grey", "cmyk", "rgba", "palette", "grey16"])
def test_image_modes_are_converted(kind, weights, pictures, tmp_path, capsys):
    code, _, err = run(["explain", pictures[kind], "--model", MODEL, "--weights", weights, "--layers", "2",
                        "--out", tmp_path], capsys)
    assert code == 0, err
    assert (tmp_path / f"{pictures[kind].stem}.caap.npy").exists()


def test_top_k_and_pth_weights(weights, pictures, tmp_path, capsys):
    from safetensors.torch import load_file

    pth = tmp_path / "w.pth"
    torch.save({"state_dict": load_file(str(weights))}, pth)
    code, _, err = run(["explain", pictures["rgb"], "--model", MODEL, "--weights", pth, "--top-k", "3",
                        "--layers", "3", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "o" / "results.json").read_text())["images"][0]
    assert len(record["targets"]) == 3 and np.load(tmp_path / "o" / "rgb.caap.npy").shape == (3, 10, 10)
    assert record["probability"] == sorted(record["probability"], reverse=True)


def _bad_cases(weights, pictures, tmp_path):
    pickled = tmp_path / "full.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a pickled module, not a state dict
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01garbage" * 10)
    wrong = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({"head.weight": torch.zeros(3, 3)}, str(wrong))
    ok = ["--model", MODEL, "--weights", weights, "--out", tmp_path / "o"]
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "n01440764_x.png")
    text_pth = tmp_path / "text.pth"
    text_pth.write_text("these are not weights\n" * 20)
    three = tmp_path / "three"
    three.mkdir(exist_ok=True)
    for wnid in ("n01440764", "n01443537", "n01484850"):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(three / f"{wnid}_x.png")
    truncated_hf, pickled_hf, marker = hf_folders(tmp_path)
    return {
        "missing image": (["explain", tmp_path / "nope.png", *ok], "nope.png' does not exist"),
        "text file": (["explain", pictures["text"], *ok], "not an image file"),
        "truncated": (["explain", pictures["truncated"], *ok], "corrupt or truncated"),
        "unknown model": (["explain", pictures["rgb"], "--model", "vit_imaginary", "--out", tmp_path],
                          "unknown model 'vit_imaginary'"),
        "not a vit": (["explain", pictures["rgb"], "--model", "test_resnet", "--out", tmp_path],
                      "'test_resnet' (ResNet) is not a ViT caap can open: method 'caap' needs"),
        "offline hub weights": (["explain", pictures["rgb"], "--model", "test_vit", "--out", tmp_path],
                                "not in the local cache"),
        "bad layers": (["explain", pictures["rgb"], *ok, "--layers", "4-8"], "bad layers '4-8'"),
        "layers out of range": (["explain", pictures["rgb"], *ok, "--layers", "4:9"], "layer 6 is out of range"),
        "target out of range": (["explain", pictures["rgb"], *ok, "--target", "1000"], "--target 1000 is out of range"),
        "target no class": (["explain", pictures["rgb"], *ok, "--target", "zzz"], "--target 'zzz': no class is named"),
        "bad context": (["explain", pictures["rgb"], *ok, "--context", "fog"], "unknown context 'fog'"),
        "missing weights": (["explain", pictures["rgb"], "--model", MODEL, "--weights", tmp_path / "no.safetensors",
                             "--out", tmp_path], "does not exist"),
        "garbage weights": (["explain", pictures["rgb"], "--model", MODEL, "--weights", garbage, "--out", tmp_path],
                            "not a valid safetensors file"),
        "pickle-only": (["explain", pictures["rgb"], "--model", MODEL, "--weights", pickled, "--out", tmp_path],
                        "pickle that needs code"),
        "wrong weights": (["explain", pictures["rgb"], "--model", MODEL, "--weights", wrong, "--out", tmp_path],
                          "do not fit 'test_vit'"),
        "bad top-k": (["explain", pictures["rgb"], *ok, "--top-k", "0"], "--top-k 0"),
        # issue 13
        "empty layers": (["explain", pictures["rgb"], *ok, "--layers", ""], "layers '' name no block"),
        "top-k with a target": (["explain", pictures["rgb"], *ok, "--target", "2", "--top-k", "3"], "--top-k 3"),
        "meta device": (["explain", pictures["rgb"], *ok, "--device", "meta"], "'meta' is not supported"),
        "xpu device": (["explain", pictures["rgb"], *ok, "--device", "xpu"], "'xpu' is not supported"),
        "huge blur": (["explain", pictures["rgb"], *ok, "--context", "blur:1e9"], "up to 1000"),
        "bad method value": (["explain", pictures["rgb"], *ok, "--method", "rise:masks=100:seed=x"],
                             "seed must be an int"),
        "usage error": (["explain", pictures["rgb"], *ok, "--dtype", "int8"], "invalid choice: 'int8'"),
        "out is a file": (["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--out",
                           pictures["text"]], "cannot use"),
        "bench no methods": (["bench", "--model", "caap-demo", "--data", "synthetic", "--methods", "", "--out",
                              tmp_path / "b"], "--methods is empty"),
        "bench masks missing": (["bench", "--model", "caap-demo", "--data", folder, "--metrics", "pointing_game",
                                 "--out", tmp_path / "b"], "needs ground-truth masks"),
        "bench bad compare": (["bench", "--model", "caap-demo", "--data", "synthetic", "--methods", "caap",
                               "--compare", "gae", "--out", tmp_path / "b"], "--compare 'gae'"),
        "sweep bad device": (["sweep", "--model", "caap-demo", "--data", "synthetic", "--device", "mps", "--out",
                              tmp_path / "s"], "'mps' is not supported"),
        # issue 28
        "text file as .pth": (["explain", pictures["rgb"], "--model", MODEL, "--weights", text_pth, "--out", tmp_path],
                              "not a torch checkpoint"),
        "unicode digit target": (["explain", pictures["rgb"], *ok, "--target", "\u00b2"], "no class is named '\u00b2'"),
        "grid of one class": (["bench", "--model", MODEL, "--weights", weights, "--data", f"grid:{folder}", "--metrics",
                               "pointing_game", "--out", tmp_path / "g1"], "at least 4 classes (one per cell); "),
        "grid of three classes": (["bench", "--model", MODEL, "--weights", weights, "--data", f"grid:{three}",
                                   "--metrics", "pointing_game", "--out", tmp_path / "g3"], "of 3 class(es)"),
        "truncated HF safetensors": (["explain", pictures["rgb"], "--model", truncated_hf, "--out", tmp_path],
                                     "cannot load its weights"),
        "pickled HF weights": (["explain", pictures["rgb"], "--model", pickled_hf, "--out", tmp_path],
                               "pickle that needs code to load"),
    }


class Planted:
    """A pickle that would create ``marker`` if it were ever unpickled with code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def hf_folders(tmp_path):
    """Two Hugging Face model folders of a tiny ViT: one with ``model.safetensors`` cut in half, one whose only
    weights are a ``pytorch_model.bin`` pickle that runs code (and the marker it would create)."""
    from archs import ARCHS

    truncated, pickled, marker = tmp_path / "hf_truncated", tmp_path / "hf_pickled", tmp_path / "PWNED"
    ARCHS["hf_vit"]().save_pretrained(truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    ARCHS["hf_vit"]().save_pretrained(pickled)
    (pickled / "model.safetensors").unlink()
    with open(pickled / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"vit.embeddings.cls_token": Planted(marker)}, handle)
    return truncated, pickled, marker


def test_bad_input_gives_one_line_and_exit_2(weights, pictures, tmp_path, capsys):
    cases = _bad_cases(weights, pictures, tmp_path)
    capsys.readouterr()  # what building the cases printed (save_pretrained's progress)
    for label, (args, message) in cases.items():
        code, _, err = run(args, capsys)
        assert code == 2, label
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("caap: error:"), (label, err)
        assert message in lines[0], (label, lines[0])
    assert not (tmp_path / "PWNED").exists()  # the planted pickle never ran


def test_hub_loading_offline_is_a_clear_error(pictures, tmp_path):
    """The real hub path runs (timm pretrained=True); with no hub reachable it ends at once (the cache only, no
    retries: it used to take 52 s) in one line, exit 2 — with HF_HUB_OFFLINE set or not."""
    import time

    for offline in ("1", None):
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env.update({"HF_HUB_OFFLINE": offline} if offline else {})
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "caap.cli", "explain", str(pictures["rgb"]), "--model", MODEL,
                               "--out", str(tmp_path)], capture_output=True, text=True, env=env)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
        assert "could not load pretrained weights for 'test_vit' (offline, and not in the local cache)" in proc.stderr
        assert "--weights" in proc.stderr and time.perf_counter() - start < 30


@pytest.mark.parametrize("method", ["rollout", "integrated_gradients", "occlusion"])
def test_explain_with_another_method(method, weights, pictures, tmp_path, capsys):
    code, _, err = run(["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--method", method,
                        "--top-k", "2", "--out", tmp_path], capsys)
    assert code == 0, err
    maps = np.load(tmp_path / "rgb.caap.npy")
    assert maps.shape[0] == 2 and maps.shape[1:] in [(10, 10), (160, 160)]
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["method"] == method


def test_explain_rejects_options_a_method_does_not_take(weights, pictures, tmp_path, capsys):
    code, _, err = run(["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--method", "rollout",
                        "--layers", "2:4", "--out", tmp_path], capsys)
    assert code == 2 and "method 'rollout' takes no --layers" in err
    code, _, err = run(["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--method",
                        "caap_adaptive", "--layers", "2:4", "--out", tmp_path], capsys)
    assert code == 0, err  # CAAP's own options reach its coarse-to-fine subclass
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["layers"] == [2, 3]
    code, _, err = run(["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--method", "magic",
                        "--out", tmp_path], capsys)
    assert code == 2 and "unknown method 'magic'" in err


def test_compare_writes_one_grid(weights, pictures, tmp_path, capsys):
    code, stdout, err = run(["compare", pictures["rgb"], "--model", MODEL, "--weights", weights, "--methods",
                             "caap,rollout,gradcam,saliency", "--out", tmp_path], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "compare.png").size[0] > 400
    assert set(json.loads((tmp_path / "compare.json").read_text())["seconds"]) == {"caap", "rollout", "gradcam",
                                                                                   "saliency"}
    code, _, err = run(["compare", pictures["rgb"], "--model", MODEL, "--weights", weights, "--methods", "caap,nope",
                        "--out", tmp_path], capsys)
    assert code == 2 and "unknown method 'nope'" in err


def test_explain_takes_method_specs(weights, pictures, tmp_path, capsys):
    code, _, err = run(["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--method",
                        "rise:masks=16:seed=3", "--out", tmp_path], capsys)
    assert code == 0, err
    settings = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert settings["masks"] == 16 and settings["seed"] == 3 and settings["spec"] == "rise:masks=16:seed=3"
    code, _, err = run(["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--method",
                        "caap:layers=1:3:context=blur:4", "--out", tmp_path / "c"], capsys)
    assert code == 0, err
    settings = json.loads((tmp_path / "c" / "results.json").read_text())["settings"]
    assert settings["layers"] == [1, 2] and settings["context"] == "blur:4"
    code, _, err = run(["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--method",
                        "rise:masks=100:seed=x", "--out", tmp_path / "bad"], capsys)
    assert code == 2 and err.count("\n") == 1 and "seed must be an int, got 'x'" in err


def test_silently_ignored_options_are_errors(weights, pictures, tmp_path, capsys):
    base = ["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--out", tmp_path]
    for extra, message in [(["--layers", ""], "layers '' name no block"),
                           (["--target", "3", "--top-k", "2"], "--top-k 2 applies to --target auto"),
                           (["--device", "meta"], "--device 'meta' is not supported")]:
        code, _, err = run([*base, *extra], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, (extra, err)


def test_oversized_images_and_bad_context_bounds_are_one_line_errors(weights, tmp_path, capsys):
    from caap.data import images as image_module

    big = tmp_path / "n01440764_big.png"
    Image.new("L", (9000, 8000)).save(big)  # 72 MP of zeros: a small file that would take GBs to decode
    base = ["--model", MODEL, "--weights", weights, "--out", tmp_path / "o"]
    code, _, err = run(["explain", big, *base], capsys)
    assert code == 2 and err.count("\n") == 1 and "too large (72 megapixels; limit 64 megapixels" in err
    bomb = tmp_path / "bomb.png"
    Image.new("L", (14000, 13000)).save(bomb)  # over twice Pillow's limit: it refuses to open it
    assert image_module.MAX_PIXELS < 14000 * 13000
    code, _, err = run(["explain", bomb, *base], capsys)
    assert code == 2 and err.count("\n") == 1
    small = tmp_path / "small.png"
    Image.new("RGB", (32, 32)).save(small)
    for context, message in [("blur:1e9", "blur sigma must be a positive number of pixels up to 1000"),
                             ("noise:1:123456789012345678901234", "noise seed must be an integer")]:
        code, _, err = run(["explain", small, *base, "--context", context], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    for bad in (empty, text):
        code, _, err = run(["explain", small, "--model", MODEL, "--weights", bad, "--out", tmp_path / "o"], capsys)
        assert code == 2 and err.count("\n") == 1 and str(bad.name) in err and "Traceback" not in err, err


def every_command(weights, pictures) -> dict[str, list]:
    """A quick call of each of the five commands, without its --out."""
    return {
        "demo": ["demo", "--images", "1"],
        "explain": ["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--layers", "5"],
        "compare": ["compare", pictures["rgb"], "--model", MODEL, "--weights", weights, "--methods", "rollout"],
        "bench": ["bench", "--model", "caap-demo", "--data", "synthetic", "--limit", "1", "--methods", "rollout",
                  "--metrics", "sparseness"],
        "sweep": ["sweep", "--model", "caap-demo", "--data", "synthetic", "--limit", "1", "--starts", "0",
                  "--widths", "1", "--contexts", "mean", "--metrics", "sparseness"],
    }


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_bad_output_locations_on_every_command(weights, pictures, tmp_path, capsys, where):
    blocker = tmp_path / "taken"
    blocker.write_text("a user's file")
    out = blocker if where == "file" else blocker / "sub"
    for name, args in every_command(weights, pictures).items():
        code, _, err = run([*args, "--out", out], capsys)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert blocker.read_text() == "a user's file"


def test_outputs_never_overwrite_inputs_and_names_are_unique(weights, tmp_path, capsys):
    rng = np.random.default_rng(1)
    (tmp_path / "sub").mkdir()
    files = [tmp_path / "a.jpg", tmp_path / "a_1.png", tmp_path / "sub" / "a.png", tmp_path / "a.caap.png"]
    for f in files:
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(f)
    before = {f: f.read_bytes() for f in files}
    code, _, err = run(["explain", *files, "--model", MODEL, "--weights", weights, "--layers", "5",
                        "--out", tmp_path], capsys)  # --out is the inputs' own folder
    assert code == 0, err
    assert all(f.read_bytes() == data for f, data in before.items())  # no input was touched
    results = json.loads((tmp_path / "results.json").read_text())["images"]
    assert [r["image"] for r in results] == [str(f) for f in files]  # input -> output, in order
    names = [r["png"] for r in results]
    assert names == ["a-2.caap.png", "a_1.caap.png", "a-3.caap.png", "a.caap.caap.png"]  # a.caap.png is an input
    assert all((tmp_path / r["npy"]).is_file() for r in results)


def test_usage_errors_are_one_line_without_the_usage_block(capsys):
    for args, message in [(["bogus"], "invalid choice: 'bogus'"),
                          (["explain", "x.png", "--model", "m", "--out", "o", "--dtype", "int8"],
                           "explain: argument --dtype: invalid choice: 'int8'"),
                          (["bench", "--model", "m"], "the following arguments are required: --data, --out"),
                          (["demo", "--images", "many"], "argument --images: invalid int value: 'many'")]:
        code, _, err = run(args, capsys)
        assert code == 2 and err.count("\n") == 1 and err.startswith("caap: error:") and message in err, err
        assert "usage:" not in err


@pytest.mark.parametrize("error", [(28, "No space left on device"), (13, "Permission denied"),
                                   (30, "Read-only file system")])
def test_a_disk_that_refuses_writes_is_one_line(weights, pictures, tmp_path, capsys, monkeypatch, error):
    """Full, not permitted, read-only: simulated at the atomic rename (root writes anywhere on this machine),
    on every command."""
    import os

    def refuse(src, dst):
        raise OSError(error[0], error[1], str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    for name, args in every_command(weights, pictures).items():
        out = tmp_path / name
        code, _, err = run([*args, "--out", out], capsys)
        assert code == 2 and err.count("\n") == 1 and error[1] in err and "Traceback" not in err, (name, err)
        assert not [p for p in out.rglob("*") if p.is_file() and p.name != ".lock"]  # no half-written file


def test_all_names_every_registered_method_and_metric():
    from caap import methods, metrics
    from caap.bench.flags import specs as _specs

    assert _specs("all") == methods.available()
    assert _specs(" all ", "metric") == [m for m in metrics.available() if m != "quantus"]  # quantus:NAME only
    assert {"transformer_attribution", "attnlrp", "extremal_perturbation"} <= set(_specs("all"))
    assert _specs("caap:layers=4,5,rise") == ["caap:layers=4,5", "rise"]


def test_target_by_class_name_and_a_folder_of_images(weights, pictures, tmp_path, capsys):
    from caap.core.targets import class_index
    from caap.errors import CaapError

    names = ["tench, Tinca tinca", "goldfish, Carassius auratus", "robin, American robin", "robinet"]
    assert class_index("robin", names) == 2 and class_index("American", names) == 2  # exact synonym, then prefix
    assert class_index("gold", names) == 1 and class_index("3", names) == 3
    with pytest.raises(CaapError, match="matches 2 classes"):
        class_index("rob", names)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.png", "sub/a.jpg"):
        (folder / name).write_bytes(pictures["rgb"].read_bytes() if name.endswith("png") else
                                    pictures["jpeg"].read_bytes())
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "o"
    code, _, err = run(["explain", folder, "--model", MODEL, "--weights", weights, "--layers", "2:4",
                        "--target", "robin", "--out", out], capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert [r["png"] for r in results["images"]] == ["b.caap.png", "a.caap.png"]
    assert all(r["targets"] == [15] for r in results["images"])  # 'robin, American robin, Turdus migratorius'
    code, _, err = run(["explain", pictures["rgb"], "--model", MODEL, "--weights", weights, "--target", "gr",
                        "--out", out], capsys)  # great white shark, grey whale, …
    assert code == 2 and "--target 'gr'" in err and "be more specific" in err and err.count("\n") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["explain", empty, "--model", MODEL, "--out", tmp_path / "q"], capsys)
    assert code == 2 and "no images" in err
