"""Seconds per image: the batched CAAP engine vs the naive one-forward-per-patch loop.

    python benchmarks/engine.py [--images N] [--threads T] [--json OUT.json]

Models: the real DeiT-Tiny from ``../shared/data`` (or ``$CAAP_DATA_DIR``; skipped when absent) on dev
images, and a random-init ``vit_base_patch16_224`` on random inputs. Same layers (``range(4, 8)``),
float32, both methods timed in the same run; the printed ratio is naive / engine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from caap import CAAP
from caap.core.reference import naive_caap

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CAAP_DATA_DIR", ROOT.parent / "shared" / "data"))


def real_inputs(n: int):
    from timm.data import create_transform, resolve_model_data_config

    from caap.data.images import load_image
    from caap.models import create_model

    weights = DATA / "deit_tiny_patch16_224.safetensors"
    if not weights.is_file():
        return None
    model = create_model("deit_tiny_patch16_224", weights)
    transform = create_transform(**resolve_model_data_config(model))
    files = sorted((DATA / "imagenet-dev").glob("*.JPEG"))[:n]
    return model, torch.stack([transform(load_image(f)) for f in files])


def random_inputs(name: str, n: int):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    return model, torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def measure(label: str, model, images: torch.Tensor, layers: list[int], naive_images: int) -> dict:
    explainer = CAAP(model, layers=layers)
    explainer.explain(images[:1])  # warm-up
    start = time.perf_counter()
    att = explainer.explain(images)
    engine_s = (time.perf_counter() - start) / len(images)

    ctx = torch.zeros_like(images[:1])
    start = time.perf_counter()
    for b in range(naive_images):
        ref = naive_caap(model, list(model.blocks), images[b : b + 1], ctx, layers, int(att.target[b]), 1)
    naive_s = (time.perf_counter() - start) / naive_images
    err = (ref - att.scores[naive_images - 1].flatten()).abs().max().item()
    row = {"model": label, "images": len(images), "layers": layers, "engine_s_per_image": engine_s,
           "naive_s_per_image": naive_s, "speedup": naive_s / engine_s, "max_abs_diff": err,
           "batch_size": att.meta["batch_size"]}
    print(f"{label:32s} engine {engine_s:7.2f} s/img   naive {naive_s:7.2f} s/img   "
          f"speed-up {naive_s / engine_s:5.2f}x   max|diff| {err:.1e}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images per model for the engine")
    parser.add_argument("--naive-images", type=int, default=1, help="images for the naive loop (it is slow)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, float32")
    layers = list(range(4, 8))
    rows = []
    real = real_inputs(args.images)
    if real is None:
        print(f"deit_tiny_patch16_224 (real): skipped, no weights under {DATA}")
    else:
        rows.append(measure("deit_tiny_patch16_224 (real)", *real, layers, args.naive_images))
    rows.append(measure("vit_base_patch16_224 (random)", *random_inputs("vit_base_patch16_224", args.images),
                        layers, args.naive_images))
    if args.json:
        from caap.io import save_json

        save_json(args.json, {"torch": torch.__version__, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
