"""Issue 13, the runner: nothing is written before everything is checked, a run folder never locks or
lies after a bad start, corrupt files are named or recomputed, concurrent resumes keep every method."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from caap.bench.runner import BenchConfig, run
from caap.bench.store import RunStore
from caap.cli import main
from caap.errors import CaapError

QUICK = dict(model="caap-demo", data="synthetic", limit=2, methods=["rollout"], metrics=["sparseness"])


def test_a_metric_the_data_cannot_feed_is_refused_before_any_work(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "n01440764_a.png")  # no masks folder
    out = tmp_path / "run"
    code = main(["bench", "--model", "caap-demo", "--data", str(folder), "--methods", "rollout",
                 "--metrics", "deletion,pointing_game", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "metric 'pointing_game' needs ground-truth masks" in err and "--masks" in err
    assert not out.exists()  # refused before the run folder was written


def test_a_failed_start_does_not_lock_the_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "--model", "caap-demo", "--data", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (out / "config.json").exists()
    assert main(["bench", "--model", "no_such_model", "--data", "synthetic", "--out", str(out)]) == 2
    assert not (out / "config.json").exists()
    # the same folder then takes a good run
    assert main(["bench", "--model", "caap-demo", "--data", "synthetic", "--limit", "1", "--methods", "rollout",
                 "--metrics", "sparseness", "--out", str(out)]) == 0


@pytest.mark.parametrize("flag", ["--methods", "--metrics"])
def test_empty_lists_are_errors(tmp_path, capsys, flag):
    code = main(["bench", "--model", "caap-demo", "--data", "synthetic", flag, "", "--out", str(tmp_path / "r")])
    assert code == 2 and f"{flag} is empty" in capsys.readouterr().err


def test_a_refused_resume_says_which_setting_differs(tmp_path):
    run(BenchConfig(**QUICK), tmp_path, progress=False, report=False)
    with pytest.raises(CaapError, match=r"limit is 2 there, 3 now"):
        run(BenchConfig(**{**QUICK, "limit": 3}), tmp_path, progress=False, report=False)


def test_corrupt_files_are_named_or_recomputed(tmp_path, capsys):
    run(BenchConfig(**QUICK), tmp_path, progress=False, report=False)
    store = RunStore(tmp_path)
    record, saved = store.record_path(1, "rollout"), store.map_path(0, "rollout")
    expected = json.loads(record.read_text())
    record.write_text('{"index": 1, "met')  # a torn write from another tool
    saved.write_bytes(b"\x93NUMPY garbage")
    run(BenchConfig(**QUICK), tmp_path, progress=False, report=False)  # both are recomputed
    again = json.loads(record.read_text())
    assert again["metrics"] == expected["metrics"] and np.load(saved).shape == (8, 8)
    store.config_path.write_text("{not json")
    args = ["bench", "--model", "caap-demo", "--data", "synthetic", "--limit", "2", "--methods", "rollout",
            "--metrics", "sparseness", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json' is corrupt" in err


def test_concurrent_resumes_keep_every_method(tmp_path):
    store = RunStore(tmp_path)
    store.open({"model": "m", "methods": ["caap"]}, growing=("methods",))
    errors = []

    def add(method: str) -> None:
        try:
            for _ in range(20):
                RunStore(tmp_path).open({"model": "m", "methods": [method]}, growing=("methods",))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(m,)) for m in ("rollout", "gae", "saliency")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert set(json.loads(store.config_path.read_text())["methods"]) == {"caap", "rollout", "gae", "saliency"}


def test_a_model_that_does_not_fit_the_data_is_flagged(tmp_path, capsys):
    args = ["bench", "--model", "caap-demo", "--data", "synthetic:conjunction", "--limit", "30", "--methods",
            "rollout", "--metrics", "pointing_game", "--out", str(tmp_path / "bad")]
    assert main(args) == 0
    captured = capsys.readouterr()
    table = json.loads((tmp_path / "bad" / "table.json").read_text())
    assert table["accuracy"]["n"] == 30 and table["accuracy"]["value"] < table["accuracy"]["threshold"]
    assert "caap: warning: the model's accuracy on these 30 images" in captured.err
    assert "**Warning:**" in (tmp_path / "bad" / "table.md").read_text()
    assert "not clearly above chance" in (tmp_path / "bad" / "report.html").read_text()
    good = run(BenchConfig(**{**QUICK, "limit": 10, "metrics": ["pointing_game"]}), tmp_path / "good", progress=False,
               report=False)
    assert good["warning"] is None and good["accuracy"]["value"] >= 0.9
    assert "n = 10 images" in (tmp_path / "good" / "table.md").read_text()


def test_target_labels_file_device_dtype_batch_size_and_versions(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("cat.png", "dog.png"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / name)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class\ncat.png,3\ndog.png,7\n")
    config = BenchConfig(model="caap-demo", data=str(folder), labels=str(labels), methods=["caap"],
                         metrics=["sparseness"], device="cpu", dtype="bfloat16", batch_size=8)
    run(config, tmp_path / "run", progress=False, report=False)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "records").glob("*.json"))]
    assert [r["label"] for r in records] == [3, 7] and [r["target"] for r in records] == [3, 7]
    assert records[0]["meta"]["dtype"] == "bfloat16" and records[0]["meta"]["batch_size"] == 8
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {"caap", "torch", "timm"} <= set(stored["info"]["versions"]) and stored["info"]["device"] == "cpu"
    assert stored["info"]["method_settings"]["caap"]["layers"] == [0, 1, 2, 3]
    pred = run(BenchConfig(**{**QUICK, "target": "pred", "limit": 3}), tmp_path / "pred", progress=False,
               report=False)
    assert pred is not None
    predicted = [json.loads(p.read_text()) for p in (tmp_path / "pred" / "records").glob("*.json")]
    assert len(predicted) == 3 and all(r["target"] == r["prediction"] for r in predicted)
    labels.write_text("file,class\ncat.png,3\n")
    with pytest.raises(CaapError, match="no row for 'dog.png'"):
        run(BenchConfig(model="caap-demo", data=str(folder), labels=str(labels), methods=["rollout"],
                        metrics=["sparseness"], target="label"), tmp_path / "missing", progress=False)
    assert not (tmp_path / "missing" / "config.json").exists()
    run(BenchConfig(model="caap-demo", data=str(folder), labels=str(labels), methods=["rollout"],
                    metrics=["sparseness"]), tmp_path / "auto", progress=False, report=False)  # target auto
    cat, dog = (json.loads(p.read_text()) for p in sorted((tmp_path / "auto" / "records").glob("*.json")))
    assert cat["target"] == 3 and dog["label"] == -1 and dog["target"] == dog["prediction"]


def test_the_table_marks_only_significant_bests_and_compares_pairs(tmp_path, capsys):
    from caap.bench import stats

    store = RunStore(tmp_path)
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.1, 40)
    per = {"a": base - 0.05, "b": base, "c": base + rng.normal(0, 0.001, 40)}  # a clearly lowest; b ~ c
    for method, values in per.items():
        for i, v in enumerate(values):
            from caap.io import save_json

            save_json(store.record_path(i, method), {"index": i, "method": method, "label": 0, "prediction": 0,
                                                     "seconds": 0.1, "metrics": {"deletion": float(v),
                                                                                 "insertion": float(v)}})
    from caap.bench.table import paired_table, summarize

    table = summarize(store, list(per), ["deletion", "insertion"], num_classes=10)
    assert table["best"]["deletion"] == "a" and table["tests"]["deletion"]["p"] < 0.05  # lower is better
    assert "insertion" not in table["best"] and set(table["ties"]["insertion"]) == {"b", "c"}
    assert table["tests"]["insertion"]["p"] > 0.05  # the largest Holm-adjusted p of the best against the others
    assert (tmp_path / "scores.csv").read_text().count("\n") == 1 + 3 * 40 * 5  # 2 metrics, seconds, label, prediction
    row = table["rows"]["a"]["deletion"]
    assert row["low"] < row["mean"] < row["high"] and row["n"] == 40
    md = (tmp_path / "table.md").read_text()
    assert "**" in md and "(tie)" in md and "n = 40 images" in md
    view = paired_table(store, list(per), ["deletion"], "b")
    d = stats.paired({i: v for i, v in enumerate(per["a"])}, {i: v for i, v in enumerate(per["b"])})
    assert d["mean"] == pytest.approx(-0.05) and d["high"] < 0 and f"{d['mean']:+.4f}" in view


def test_bench_compare_view(tmp_path, capsys):
    args = ["bench", "--model", "caap-demo", "--data", "synthetic", "--limit", "4", "--methods", "caap,rollout",
            "--metrics", "pointing_game,sparseness", "--compare", "caap", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Paired difference to caap" in out and "| rollout |" in out and "p=" in out
    assert (tmp_path / "compare_caap.md").is_file()
    assert main([*args[:-4], "--compare", "gae", "--out", str(tmp_path)]) == 2


def test_a_resume_with_other_weights_at_the_same_path_is_refused(tmp_path):
    """config.json names the weights by their sha256; another file at the same path would mix two models."""
    from safetensors.torch import save_file

    from caap.adapters import create_model

    state = {k: v.clone().contiguous() for k, v in create_model("caap-demo").state_dict().items()}
    weights = tmp_path / "w.safetensors"
    save_file(state, str(weights))
    config = BenchConfig(**{**QUICK, "weights": str(weights)})
    run(config, tmp_path / "run", progress=False, report=False)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["info"]["weights_sha256"]
    assert len(stored) == 64
    run(config, tmp_path / "run", progress=False, report=False)  # the same file: resumes
    state["head.weight"] += 1
    save_file(state, str(weights))
    with pytest.raises(CaapError, match="other weights"):
        run(config, tmp_path / "run", progress=False, report=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["info"]["weights_sha256"] == stored
