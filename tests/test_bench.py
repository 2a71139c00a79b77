"""The benchmark runner: resumable with identical results, refuses mixed settings, same table on 2 ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_resume_with_more_methods_adds_them(tmp_path):
    run(BenchConfig(**{**CONFIG, "limit": 2, "methods": ["rollout"]}), tmp_path, progress=False)
    first = _results(tmp_path)
    table = run(BenchConfig(**{**CONFIG, "limit": 2, "methods": ["rollout", "caap"]}), tmp_path, progress=False)
    assert set(table["rows"]) == {"rollout", "caap"}
    both = _results(tmp_path)
    assert {k: v for k, v in both.items() if k in first} == first and len(both) == 4
    assert json.loads((tmp_path / "config.json").read_text())["methods"] == ["rollout", "caap"]


def test_cli_bench_prints_the_table(tmp_path, capsys):
    assert main(["bench", "--model", "caap-demo", "--data", "synthetic:conjunction", "--limit", "2",
                 "--methods", "caap,gradcam", "--metrics", "pointing_game,insertion:step=8",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| caap |" in out and "pointing_game ↑" in out and "insertion:step=8 ↑" in out


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


def test_sweep_scores_each_band_and_resumes(tmp_path, capsys):

    from caap import CAAP, metrics
    from caap.adapters.demo import load_demo_model
    from caap.data.datasets import Synthetic

    args = ["sweep", "--model", "caap-demo", "--data", "synthetic", "--limit", "2", "--starts", "1,4",
            "--widths", "1,2,9", "--contexts", "mean", "--metrics", "pointing_game,deletion", "--out", str(tmp_path)]
    assert main(args) == 0
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert [(s["start"], s["width"]) for s in summary["settings"]] == [(1, 1), (1, 2), (4, 1), (4, 2)]  # 9 is too wide
    assert (tmp_path / "sweep_deletion_mean_logit.png").is_file()
    model, data = load_demo_model(), Synthetic("simple", 2)
    deletion = metrics.get("deletion")()
    values = []
    for i in range(2):
        item = data[i]
        att = CAAP(model, layers=range(4, 6)).explain(item.image[None], target=[item.label])
        values.append(float(deletion(model, item.image[None], att.target, att.scores)[0]))
    setting = next(s for s in summary["settings"] if (s["start"], s["width"]) == (4, 2))
    assert setting["means"]["deletion"] == pytest.approx(sum(values) / 2, rel=1e-5)
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "records").glob("*.json")}
    assert main(args) == 0  # resume: nothing recomputed
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "records").glob("*.json")}
    other = [a if a != "pointing_game,deletion" else "deletion" for a in args]
    assert main(other) != 0  # other metrics in the same folder: refused
    assert "other data, model or metrics" in capsys.readouterr().err
    assert main([*args[:-2], "--widths", "0", "--out", str(tmp_path)]) == 2
    assert "a band has at least one block" in capsys.readouterr().err



def test_every_selects_a_spread_subset(tmp_path):
    from caap.bench.runner import load
    from caap.data.datasets import Synthetic

    _, subset = load(BenchConfig(**{**CONFIG, "limit": 3, "every": 4}))
    full = Synthetic("simple", size=12)
    assert len(subset) == 3
    assert [subset[i].id for i in range(3)] == [full[i].id for i in (0, 4, 8)]
    assert main(["bench", "--model", "caap-demo", "--data", "synthetic", "--every", "0", "--out", str(tmp_path)]) != 0


def test_method_specs_configure_methods_in_a_run(tmp_path):
    from caap import methods

    explainer = methods.build("caap:layers=2:5:context=blur:2", _demo())
    assert explainer.layers == [2, 3, 4] and explainer.context.describe().startswith("blur")
    with pytest.raises(CaapError, match="method 'rise:bogus=1'"):
        methods.build("rise:bogus=1", _demo())
    table = run(BenchConfig(**{**CONFIG, "limit": 2, "methods": ["rise:masks=8", "caap:layers=1:3"],
                               "metrics": ["pointing_game"]}), tmp_path, progress=False)
    assert set(table["rows"]) == {"rise:masks=8", "caap:layers=1:3"}
    assert (tmp_path / "maps" / "000001_rise_masks=8.npy").is_file()
    assert json.loads((tmp_path / "records" / "000000_caap_layers=1_3.json").read_text())["meta"]["layers"] == [1, 2]


def _demo():
    from caap.adapters.demo import load_demo_model

    return load_demo_model()


def test_rescore_recomputes_metrics_from_saved_maps(tmp_path, monkeypatch):
    config = BenchConfig(**{**CONFIG, "limit": 2})
    run(config, tmp_path, progress=False)
    before = _results(tmp_path)
    from caap.methods.attention import Rollout
    from caap.metrics.localisation import RelevanceMass

    monkeypatch.setattr(Rollout, "explain", lambda *a, **k: pytest.fail("rescore must not explain again"))
    monkeypatch.setattr(RelevanceMass, "evaluate", lambda self, model, images, targets, maps, masks:
                        torch.full((maps.shape[0],), 0.25))
    run(config, tmp_path, progress=False, rescore=True)
    after = _results(tmp_path)
    assert all(r["metrics"]["relevance_mass"] == 0.25 for r in after.values())
    for name, r in after.items():
        r["metrics"].pop("relevance_mass")
        before[name]["metrics"].pop("relevance_mass")
        assert r == before[name]
