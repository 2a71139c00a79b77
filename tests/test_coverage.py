"""The coverage table's generator (issue 27, benchmarks/coverage.py) on a few classes: it builds each model, tries
the methods and writes a row per class, so the committed table (docs/COVERAGE.md) can be regenerated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_coverage_script_tries_every_method_on_each_class(tmp_path):
    out = tmp_path / "coverage.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "coverage.py"), "--out", str(out), "--json",
                           str(tmp_path / "c.json"), "--timm-modules", "deit,swin_transformer,cait", "--hf",
                           "ViTForImageClassification,SwinForImageClassification", "--tiny"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| timm")
            or line.startswith("| transformers")}
    assert set(rows) == {"timm deit.VisionTransformerDistilled", "timm vision_transformer.VisionTransformer",
                         "timm swin_transformer.SwinTransformer", "timm cait.Cait",
                         "transformers SwinForImageClassification", "transformers ViTForImageClassification"}
    assert rows["timm vision_transformer.VisionTransformer"].count("| yes") == 5
    assert "Swin merges patches between its stages" in rows["timm swin_transformer.SwinTransformer"]
    assert "Swin merges patches" in rows["transformers SwinForImageClassification"]
    assert rows["timm cait.Cait"].split(" | ")[2] == "yes"  # exact CAAP on the patch blocks
