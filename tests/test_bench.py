"""The benchmark runner: resumable with identical results, refuses mixed settings, same table on 2 ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from caap.bench.runner import BenchConfig, run
from caap.cli import main
from caap.errors import CaapError

CONFIG = dict(model="caap-demo", data="synthetic", limit=5, methods=["caap", "rollout"],
              metrics=["pointing_game", "deletion", "relevance_mass"])


def _results(out: Path) -> dict:
    """Every record without its timing, keyed by file name."""
    records = {}
    for p in sorted((out / "records").glob("*.json")):
        r = json.loads(p.read_text())
        r.pop("seconds")
        records[p.name] = r
    return records


def test_interrupted_run_resumes_to_identical_results(tmp_path, monkeypatch):
    full = tmp_path / "full"
    table = run(BenchConfig(**CONFIG), full, progress=False)
    assert set(table["rows"]) == {"caap", "rollout"} and table["rows"]["caap"]["pointing_game"]["n"] == 5

    from caap.methods.attention import Rollout

    original, calls = Rollout.explain, {"n": 0}

    def dying(self, *args, **kwargs):  # the run is killed after a few records
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    part = tmp_path / "part"
    monkeypatch.setattr(Rollout, "explain", dying)
    with pytest.raises(KeyboardInterrupt):
        run(BenchConfig(**CONFIG), part, progress=False)
    monkeypatch.undo()
    done = len(list((part / "records").glob("*.json")))
    assert 0 < done < 10
    run(BenchConfig(**CONFIG), part, progress=False)  # resume: finished records are skipped
    assert _results(part) == _results(full)
    assert json.loads((part / "table.json").read_text())["best"] == table["best"]
    for name in ("table.md", "table.csv", "config.json"):
        assert (part / name).is_file()


def test_resume_with_other_settings_is_refused(tmp_path):
    run(BenchConfig(**{**CONFIG, "limit": 1}), tmp_path, progress=False)
    with pytest.raises(CaapError, match="holds a run with other settings"):
        run(BenchConfig(**{**CONFIG, "limit": 1, "metrics": ["deletion"]}), tmp_path, progress=False)


def test_cli_bench_prints_the_table(tmp_path, capsys):
    assert main(["bench", "--model", "caap-demo", "--data", "synthetic:conjunction", "--limit", "2",
                 "--methods", "caap,gradcam", "--metrics", "pointing_game,insertion", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| caap |" in out and "pointing_game ↑" in out and "insertion ↑" in out


def test_two_processes_give_the_same_table_as_one(tmp_path):
    one = tmp_path / "one"
    run(BenchConfig(**CONFIG), one, progress=False)
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "caap.cli", "bench", "--model", "caap-demo", "--data", "synthetic", "--limit", "5",
           "--methods", "caap,rollout", "--metrics", "pointing_game,deletion,relevance_mass", "--out", str(two)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _results(two) == _results(one)
    t1, t2 = (json.loads((d / "table.json").read_text()) for d in (one, two))
    for method in t1["rows"]:
        for metric in ("pointing_game", "deletion", "relevance_mass"):
            assert t1["rows"][method][metric]["mean"] == pytest.approx(t2["rows"][method][metric]["mean"])
