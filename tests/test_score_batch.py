"""``score_batch`` (issue 26): maps of several methods and images scored together give the records that scoring
each map alone gives — the same maps byte for byte, the same metric values and curves to float rounding (a metric's
forwards then run in other batch shapes) — and every record of the run is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tolerance import ULPS

from caap.bench.runner import BenchConfig, run
from caap.errors import CaapError

CONFIG = dict(model="caap-demo", data="synthetic", limit=3, methods=["caap", "rollout", "gae"],
              metrics=["pointing_game", "relevance_mass", "deletion:step=8", "insertion:step=8:canvas=mean",
                       "road:percentiles=30,70", "road_morf:percentiles=30,70", "randomization:levels=0,2"])


def _records(out: Path) -> dict:
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))}


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{k}]")
    elif isinstance(a, float):
        # scores are float32 results (probabilities, AUCs, shares: magnitude <= 1 mostly); another batch shape may
        # change the kernels' summation order (tests/tolerance.py), so they agree to ULPS units in the last place of
        # float32 at their own magnitude — bit for bit on the 2-core AMD EPYC where this was written
        assert abs(a - b) <= ULPS * torch.finfo(torch.float32).eps * max(1.0, abs(b)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_scoring_maps_together_gives_the_records_of_scoring_each_alone(tmp_path):
    alone, together = tmp_path / "alone", tmp_path / "together"
    run(BenchConfig(**CONFIG), alone, progress=False, report=False)
    run(BenchConfig(**CONFIG), together, progress=False, report=False, score_batch=4)  # 9 maps: 4 + 4 + 1
    a, b = _records(alone), _records(together)
    assert [json.loads((out / "config.json").read_text())["info"]["score_batch"] for out in (alone, together)] == [1, 4]
    assert len(a) == 9 and a.keys() == b.keys()
    for name in a:
        for r in (a[name], b[name]):
            r.pop("seconds")
        assert set(a[name]["metrics"]) == set(CONFIG["metrics"])
        _close(a[name], b[name], name)
        stem = name.removesuffix(".json")
        assert np.load(alone / "maps" / f"{stem}.npy").tobytes() == np.load(together / "maps" / f"{stem}.npy").tobytes()
    rows = [json.loads((out / "table.json").read_text())["rows"] for out in (alone, together)]
    _close(*[{m: {k: v for k, v in row.items() if k in CONFIG["metrics"]} for m, row in r.items()} for r in rows])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_a_bad_score_batch_is_refused_before_the_folder_is_written(tmp_path, bad):
    with pytest.raises(CaapError, match="score_batch"):
        run(BenchConfig(**CONFIG), tmp_path / "run", progress=False, score_batch=bad)
    assert not (tmp_path / "run").exists()
