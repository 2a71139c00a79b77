"""The last bad-input defects of the adversarial probe (issue 28) outside the CLI's table (tests/test_cli.py):
tampered attribution files, Quantus targets and inputs, maps every metric checks the same way, huge images,
folders, image contexts without a suffix, and resumed bench tables."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from archs import IMG, build
from PIL import Image

from caap import Attribution, metrics
from caap.errors import CaapError


def tampered(tmp_path, header: dict | None = None, tensors: dict | None = None):
    """An attribution file written by safetensors with the given header and tensors (defaults: a valid one)."""
    from safetensors.torch import save_file

    good = {"format": "caap.attribution/1", "input_size": [32, 32], "method": "caap", "meta": {}}
    path = tmp_path / "maps.safetensors"
    save_file(tensors or {"scores": torch.zeros(1, 4, 4), "target": torch.zeros(1, dtype=torch.int64)}, str(path),
              metadata={"caap": json.dumps(header if header is not None else good)})
    return path


@pytest.mark.parametrize(("header", "tensors", "message"), [
    ({"format": "caap.attribution/1", "input_size": [32, 32], "method": "caap"}, None, "'meta' is None"),
    ({"format": "caap.attribution/1", "input_size": [32, 32], "method": "caap", "meta": "x"}, None, "'meta' is 'x'"),
    ({"format": "caap.attribution/1", "input_size": "abc", "method": "caap", "meta": {}}, None, "input_size"),
    ({"format": "caap.attribution/1", "input_size": [64], "method": "caap", "meta": {}}, None, "input_size"),
    ({"format": "caap.attribution/1", "input_size": [2, 2], "method": "caap", "meta": {}}, None, "cannot come from"),
    (None, {"target": torch.zeros(1, dtype=torch.int64)}, "'scores' is missing"),
    (None, {"scores": torch.zeros(1, 4, 4, dtype=torch.int8), "target": torch.zeros(1, dtype=torch.int64)},
     "'scores' is torch.int8"),
    (None, {"scores": torch.zeros(1, 4, 4), "target": torch.zeros(2, dtype=torch.int64)}, "target must be [B]=1"),
    (None, {"scores": torch.zeros(1, 4, 4), "target": torch.zeros(1, dtype=torch.int64),
            "class_scores": torch.zeros(1, 3, 5, 5)}, "class_scores"),
])
def test_tampered_attribution_files_are_refused_on_load(tmp_path, header, tensors, message):
    with pytest.raises(CaapError, match="does not hold valid maps|header's|tensor") as info:
        Attribution.load(tampered(tmp_path, header, tensors))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_valid_file_still_loads(tmp_path):
    att = Attribution.load(tampered(tmp_path))
    assert att.scores.shape == (1, 4, 4) and att.input_size == (32, 32)


def test_quantus_targets_and_inputs_are_checked():
    from caap.quantus import explain_func

    model = build("timm_vit")
    explain = explain_func("gae")
    x = torch.randn(2, 3, IMG, IMG).numpy()
    assert explain(model, x, np.array([1.0, 2.0])).shape == (2, 1, IMG, IMG)  # whole floats are indices
    for bad, shown in ((["a", "b"], "'a'"), ([1.7, 2], "1.7"), ([True, False], "True")):
        with pytest.raises(CaapError, match="integer class indices") as info:
            explain(model, x, bad)
        assert shown in str(info.value)
    with pytest.raises(CaapError, match="dtype torch.uint8"):
        explain(model, (np.random.default_rng(0).random((2, 3, IMG, IMG)) * 255).astype(np.uint8), [1, 2])


@pytest.mark.parametrize("name", ["relevance_mass", "sparseness", "road", "deletion", "pointing_game"])
def test_every_metric_checks_maps_the_same_way(name):
    """Maps of the wrong size (7x7, 65x64 on a 4x4-patch model of 32 px) and all-NaN maps are refused by every
    metric, not only by the curve metrics."""
    model = build("timm_vit")
    x = torch.randn(1, 3, IMG, IMG)
    t = torch.tensor([1])
    masks = torch.zeros(1, IMG, IMG, dtype=torch.bool)
    masks[0, :8, :8] = True
    metric = metrics.build(f"{name}:percentiles=50" if name == "road" else name)
    for maps, message in ((torch.rand(1, 7, 7), "do not fit the model"), (torch.rand(1, 65, 64), "do not fit"),
                          (torch.full((1, 4, 4), float("nan")), "NaN or infinite")):
        with pytest.raises(CaapError, match=message):
            metric(model, x, t, maps, masks)
    metric(model, x, t, torch.rand(1, 4, 4), masks)  # the patch grid
    metric(model, x, t, torch.rand(1, IMG, IMG), masks)  # pixels


def test_a_huge_image_is_too_large_not_corrupt(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("RGB", (9000, 8000)).save(path)  # 72 megapixels
    from caap.data.images import load_image

    with pytest.raises(CaapError, match=r"too large \(72 megapixels; limit 64 megapixels"):
        load_image(path)


def test_folders_skip_caaps_outputs_and_refuse_unreadable_subfolders(tmp_path, monkeypatch):
    from caap.data.datasets import image_files

    Image.new("RGB", (8, 8)).save(tmp_path / "cat.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.caap.png")  # what `caap explain DIR --out DIR` writes
    Image.new("RGB", (8, 8)).save(tmp_path / "cat-2.caap.png")
    assert image_files(tmp_path) == [tmp_path / "cat.png"]
    locked = tmp_path / "locked"
    locked.mkdir()
    Image.new("RGB", (8, 8)).save(locked / "dog.png")
    real = os.scandir

    def scandir(path="."):  # as a folder without read permission answers (root reads any, so it is simulated)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(CaapError, match="cannot read the folder .*locked.*Permission denied"):
        image_files(tmp_path)


def test_explain_twice_into_its_own_folder_reads_no_output_back(tmp_path, capsys):
    from caap.cli import main

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    for _ in range(2):
        assert main(["explain", str(tmp_path), "--model", "caap-demo", "--method", "gae", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["image"] for r in results["images"]] == [str(tmp_path / "a.png")]


def test_an_image_file_without_a_suffix_is_a_context(tmp_path, capsys):
    from caap.cli import main

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "neutral").write_bytes((tmp_path / "a.png").read_bytes())  # a PNG named without a suffix
    assert main(["explain", str(tmp_path / "a.png"), "--model", "caap-demo", "--context", str(tmp_path / "neutral"),
                 "--out", str(tmp_path / "out")]) == 0
    maps = np.load(tmp_path / "out" / "a.caap.npy")
    assert np.abs(maps).max() < 1e-4  # the context is the image itself: patching changes nothing


def test_a_resumed_bench_lists_every_method_it_holds(tmp_path):
    from caap.bench.runner import BenchConfig, run

    base = {"model": "caap-demo", "data": "synthetic", "limit": 2, "metrics": ["pointing_game"]}
    run(BenchConfig(**base, methods=["caap"]), tmp_path, progress=False, report=False)
    table = run(BenchConfig(**base, methods=["caap:layers=0:2"]), tmp_path, progress=False, report=False)
    assert set(table["rows"]) == {"caap", "caap:layers=0:2"}


def test_refused_weights_are_one_line_through_the_real_entry_point(tmp_path):
    """In a real process (where Python prints warnings): a Hugging Face folder whose only weights are a pickle
    that runs code, and a text file as .pth weights — exit 2, one line, no warning before it, nothing run."""
    import subprocess
    import sys

    from test_cli import hf_folders

    _, pickled, marker = hf_folders(tmp_path)
    picture = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(picture)
    text = tmp_path / "text.pth"
    text.write_text(". a text file whose first byte is pickle's STOP\n" * 10)  # torch's unpickler: IndexError
    for args, message in (([ "--model", str(pickled)], "pickle that needs code to load"),
                          (["--model", "caap-demo", "--weights", str(text)], "not a torch checkpoint")):
        proc = subprocess.run([sys.executable, "-m", "caap.cli", "explain", str(picture), *args, "--out",
                               str(tmp_path / "out")], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("caap: error:") and message in proc.stderr
    assert not marker.exists()
