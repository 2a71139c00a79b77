"""Whole-bench throughput: images per second of ``caap bench`` for the six strongest fast methods scored by
deletion, insertion and ± perturbation on the real DeiT-Tiny.

    python benchmarks/throughput.py --out runs/throughput [--images 20] [--device cpu|cuda] [--threads 2]
        [--json benchmarks/results/throughput_cpu.json]

A fresh run folder each time (an existing one is refused, so resumed records cannot inflate the figure). The wall
time covers the whole :func:`caap.bench.runner.run` call — loading the model and the images, every map, every
metric forward, the records, the table and the report — and is also split, from the run's own records, into the
maps' seconds (per method: median and quartiles) and the rest (metrics and bookkeeping). Needs ``$CAAP_DATA_DIR``
(or ``../shared/data``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from caap.bench.provenance import record
from caap.bench.runner import BenchConfig, run
from caap.bench.store import RunStore
from caap.io import save_json

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CAAP_DATA_DIR", ROOT.parent / "shared" / "data"))
METHODS = ["caap_fast", "gae", "transformer_attribution", "attnlrp", "bidirectional", "gradcam"]
METRICS = ["deletion:step=14", "insertion:step=14", "positive_perturbation", "negative_perturbation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: throughput is measured on a fresh run folder")
    torch.set_num_threads(args.threads)
    weights = DATA / "deit_tiny_patch16_224.safetensors"
    if not weights.is_file():
        raise SystemExit(f"no real DeiT-Tiny at {weights}; set CAAP_DATA_DIR")
    every = max(1, 200 // args.images)
    config = BenchConfig(model="deit_tiny_patch16_224", weights=str(weights), data=str(DATA / "imagenet-dev"),
                         every=every, limit=args.images, target="label", device=args.device, methods=METHODS,
                         metrics=METRICS)
    start = time.perf_counter()
    run(config, args.out, progress=True, report=False)
    wall = time.perf_counter() - start
    store = RunStore(args.out)
    maps: dict[str, list[float]] = {m: [] for m in METHODS}
    for rec in store.records():
        maps[rec["method"]].append(float(rec["seconds"]))
    map_seconds = sum(sum(v) for v in maps.values())
    images = max(len(v) for v in maps.values())
    result = {
        "provenance": record(args.device), "threads": args.threads, "images": images, "methods": METHODS,
        "metrics": METRICS, "wall_s": wall, "images_per_s": images / wall,
        "maps_per_s": images * len(METHODS) / wall, "map_s_total": map_seconds,
        "rest_s_total": wall - map_seconds,
        "map_s": {m: {"median": float(np.median(v)), "q25": float(np.percentile(v, 25)),
                      "q75": float(np.percentile(v, 75))} for m, v in maps.items() if v}}
    print(f"{images} images x {len(METHODS)} methods x {len(METRICS)} metrics on {args.device}: {wall:.1f} s, "
          f"{result['images_per_s']:.3f} images/s ({result['maps_per_s']:.2f} scored maps/s); maps "
          f"{map_seconds:.1f} s, metrics and the rest {wall - map_seconds:.1f} s")
    if args.json:
        save_json(args.json, result)


if __name__ == "__main__":
    main()
