"""``caap bench`` under torchrun (issue 26): two processes shard the images and write the same records — maps byte
for byte, every record field but the measured seconds — as one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["bench", "--model", "caap-demo", "--data", "synthetic", "--limit", "5", "--methods", "caap,gae,rise:masks=8",
        "--metrics", "deletion:step=8,pointing_game,road:percentiles=50", "--dtype", "float32"]


def records(run: Path) -> dict:
    out = {}
    for path in sorted((run / "records").glob("*.json")):
        record = json.loads(path.read_text())
        record.pop("seconds")
        record["meta"].pop("seconds", None)
        out[path.name] = record
    return out


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="no torchrun")
def test_two_processes_write_what_one_process_writes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "caap.cli", *ARGS, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "caap.cli", *ARGS, "--out",
                          str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert records(tmp_path / "one") == records(tmp_path / "two") and len(records(tmp_path / "one")) == 15
    for path in sorted((tmp_path / "one" / "maps").glob("*.npy")):
        assert path.read_bytes() == (tmp_path / "two" / "maps" / path.name).read_bytes(), path.name
