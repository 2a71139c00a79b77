"""Whole-bench throughput: images per second of ``caap bench`` for the six strongest fast methods scored by
deletion, insertion and ± perturbation on the real DeiT-Tiny.

    python benchmarks/throughput.py --out runs/throughput [--images 20] [--device cpu|cuda] [--threads 2]
        [--score-batch 1] [--json benchmarks/results/throughput_cpu.json]

A fresh run folder each time (an existing one is refused, so resumed records cannot inflate the figure). The wall
time covers the whole :func:`caap.bench.runner.run` call — loading the model and the images, every map, every
metric forward, the records, the table and the report — and is also split, from the run's own records, into the
maps' seconds (per method: median and quartiles) and the rest (metrics and bookkeeping). Needs ``$CAAP_DATA_DIR``
(or ``../shared/data``). ``--score-batch N`` scores N maps together (every metric's forwards batched across
methods and images: :func:`caap.bench.runner.run`); give several (``--score-batch 1,24``) to measure each on its
own fresh folder, one after the other in the same process, so their ratio is measured under the same conditions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from caap.bench.provenance import record
from caap.bench.runner import BenchConfig, run
from caap.bench.store import RunStore
from caap.bench.table import spread
from caap.data.real import DEV, WEIGHTS, data_dir, has_real_data
from caap.io import save_json

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir(ROOT)
METHODS = ["caap_fast", "gae", "transformer_attribution", "attnlrp", "bidirectional", "gradcam"]
METRICS = ["deletion:step=14", "insertion:step=14", "positive_perturbation", "negative_perturbation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score-batch", default="1", help="maps scored together; several: 1,24")
    parser.add_argument("--metric-batch-size", type=int, default=None,
                        help="composite images per metric forward (the metrics' batch_size; default theirs, 32)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: throughput is measured on a fresh run folder")
    torch.set_num_threads(args.threads)
    if not has_real_data(DATA):
        raise SystemExit(f"no real DeiT-Tiny and dev images under {DATA}; set CAAP_DATA_DIR")
    every = max(1, 200 // args.images)
    metrics = [f"{m}:batch_size={args.metric_batch_size}" if args.metric_batch_size else m for m in METRICS]
    config = BenchConfig(model="deit_tiny_patch16_224", weights=str(DATA / WEIGHTS), data=str(DATA / DEV),
                         every=every, limit=args.images, target="label", device=args.device, methods=METHODS,
                         metrics=metrics)
    runs = []
    for batch in [int(b) for b in args.score_batch.split(",")]:
        out = args.out / f"score_batch_{batch}"
        start = time.perf_counter()
        run(config, out, progress=True, report=False, score_batch=batch)
        runs.append(measured(out, time.perf_counter() - start, batch))
    result = {"provenance": record(args.device), "threads": args.threads, "methods": METHODS, "metrics": metrics,
              "runs": runs}
    for r in runs:
        print(f"score batch {r['score_batch']}: {r['images']} images x {len(METHODS)} methods x {len(METRICS)} "
              f"metrics on {args.device}: {r['wall_s']:.1f} s, {r['images_per_s']:.3f} images/s "
              f"({r['maps_per_s']:.2f} scored maps/s); maps {r['map_s_total']:.1f} s, metrics and the rest "
              f"{r['rest_s_total']:.1f} s; {runs[0]['wall_s'] / r['wall_s']:.2f}x the first")
    if args.json:
        save_json(args.json, result)


def measured(out: Path, wall: float, batch: int) -> dict:
    """One run's throughput from its wall time and its records' map seconds (per method: a distribution)."""
    seconds = {m: v.get("seconds", {}) for m, v in RunStore(out).scores().values.items() if m in METHODS}
    map_seconds = sum(sum(v.values()) for v in seconds.values())
    images = max(len(v) for v in seconds.values())
    return {"score_batch": batch, "images": images, "wall_s": wall, "images_per_s": images / wall,
            "maps_per_s": images * len(METHODS) / wall, "map_s_total": map_seconds, "rest_s_total": wall - map_seconds,
            "map_s": {m: spread(v) for m, v in seconds.items() if v}}


if __name__ == "__main__":
    main()
