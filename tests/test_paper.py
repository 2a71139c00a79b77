"""benchmarks/paper.sh (issue 16) offline: the real-backbone evaluation path, run on random-init tiny configs of
the paper's architectures (ViT augreg, DeiT-3, CLIP pre-norm in timm's Hugging Face format; a Hugging Face
DINOv2 with a linear head), the methods that each architecture family supports, both runs per model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 1000}


def tiny_models(root: Path) -> list[str]:
    import timm
    import transformers as tf
    from timm.models import save_for_hf

    paths = []
    for name, extra in [("vit_base_patch16_224", {}), ("deit3_base_patch16_224", {"init_values": 0.1}),
                        ("vit_base_patch16_clip_224", {"pre_norm": True})]:
        torch.manual_seed(0)
        args = {**TINY, **extra}
        model = timm.create_model(name, pretrained=False, **args)
        folder = root / f"tiny_{name}"
        save_for_hf(model, folder, model_args=args, safe_serialization=True)
        paths.append(str(folder))
    torch.manual_seed(0)
    cfg = tf.Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, num_labels=1000)
    folder = root / "tiny_dinov2"
    tf.Dinov2ForImageClassification(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": 32, "width": 32}, "resample": 3, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    return [*paths, str(folder)]


def test_paper_sh_runs_offline_on_tiny_configs(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n01443537", "n01484850", "n01491361"):
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(data / f"{wnid}_a.png")
    models = tiny_models(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PAPER_MODELS": " ".join(models),
           "PAPER_METHODS": "caap,gae,transformer_attribution,saliency", "PAPER_METRICS": "deletion:step=4,road",
           "PAPER_GRID_THRESHOLD": "0.0", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "paper.sh"), str(data), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for model in models:
        run = tmp_path / "out" / Path(model).name
        table = json.loads((run / "images" / "table.json").read_text())
        assert table["images"] == 4 and set(table["rows"]) == {"caap", "gae", "transformer_attribution", "saliency"}
        assert "road" in table["rows"]["caap"]
        assert not (run / "grid").exists()  # random models are right on no cell: the grid run is refused, in one line
    assert proc.stderr.count("caap: error: no grid of 4 classes can be built") == len(models)
