"""Seconds per image of every registered method on the real DeiT-Tiny (``../shared/data``), default settings.

    python benchmarks/methods.py [--images N] [--threads T] [--methods a,b]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from caap import methods

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CAAP_DATA_DIR", ROOT.parent / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=None, help="comma-separated method names (default: every method)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from timm.data import create_transform, resolve_model_data_config

    from caap.adapters import create_model
    from caap.data.images import load_image

    weights = DATA / "deit_tiny_patch16_224.safetensors"
    if not weights.is_file():
        raise SystemExit(f"no DeiT-Tiny weights under {DATA}")
    model = create_model("deit_tiny_patch16_224", weights)
    transform = create_transform(**resolve_model_data_config(model))
    files = sorted((DATA / "imagenet-dev").glob("*.JPEG"))[: args.images]
    x = torch.stack([transform(load_image(f)) for f in files])
    print(f"torch {torch.__version__}, {args.threads} threads, {len(files)} images, DeiT-Tiny, default settings")
    for name in args.methods.split(",") if args.methods else methods.available():
        explainer = methods.get(name)(model)
        start = time.perf_counter()
        att = explainer.explain(x)
        seconds = (time.perf_counter() - start) / len(files)
        print(f"{name:22s} {seconds:7.2f} s/img   map {tuple(att.scores.shape[1:])}", flush=True)


if __name__ == "__main__":
    main()
