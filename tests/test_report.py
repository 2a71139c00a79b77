"""The HTML report renders in headless Chromium (Debian's ``chromium``; skipped where it is absent)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from PIL import Image

from caap.bench.runner import BenchConfig, run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run(BenchConfig(model="caap-demo", data="synthetic", limit=3, methods=["caap", "rollout"],
                    metrics=["pointing_game", "deletion", "insertion"]), out, progress=False)
    return out


def test_report_files(report):
    page = (report / "report.html").read_text()
    assert '<table id="results">' in page
    table = json.loads((report / "table.json").read_text())  # bold only where the best beats every other method,
    assert page.count("<td><b>") == len(table["best"])  # (tie) on the best and those it is not separated from
    assert page.count("(tie)</td>") == sum(len(v) for v in table["ties"].values())
    assert table["best"] or table["ties"]
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (report / src).is_file() and (report / src).stat().st_size > 1000
    assert {p.name for p in (report / "plots").glob("*.png")} == {"deletion.png", "insertion.png", "examples.png"}


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(report, tmp_path):
    url = (report / "report.html").as_uri()
    profile = tempfile.mkdtemp()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    assert "<table id=\"results\">" in dom
    assert dom.count("<tr>") == 3 and "caap" in dom and "rollout" in dom  # header + one row per method
    assert dom.count("<img") == 3
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    "--window-size=1000,2400", url], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # text, table and plots drew something
    coloured = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert (np.abs(coloured[..., 0] - coloured[..., 2]) > 60).mean() > 0.001  # the plots' coloured lines / maps
