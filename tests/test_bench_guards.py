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
