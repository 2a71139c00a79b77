"""How the cost of exact CAAP, fast CAAP, GAE and AttnLRP grows with the number of patches and the model's size.

    python benchmarks/scaling.py time [--threads 2] [--rounds 2] [--json benchmarks/results/scaling.json]
    python benchmarks/scaling.py agree [--images 20] [--size 384] [--json benchmarks/results/scaling_agreement.json]

``time``: seconds per image (one image per call, every round kept) and the resident-set high-water mark of the
calls above the level before them (a fresh process per model and method, so that an earlier, larger call cannot
hide a smaller one's peak), for

- the patch axis: random-init ViT-S/16 at 224, 384 and 512 px (196, 576, 1,024 patches) and ViT-S/14 (DINOv2
  layout) at 518 px (1,369 patches);
- the size axis: random-init ViT-Ti/S/B/L /16 at 224 px;

with CAAP's default band (the middle third). Exact CAAP at 1,369 patches takes minutes per image on a CPU core,
so it is timed on patch subsets: an explain call with a group map that patches ``k`` chosen patches (the others
have negative group ids: not patched) costs ``a + b·k`` — ``a`` the source and context runs, ``b`` one patched
run — and two subset sizes give ``a`` and ``b``, so the full map's cost is ``a + b·P``. The study checks the
extrapolation against a full exact call at 196 patches and prints both. Exponents: the least-squares slope of
log seconds against log patches (patch axis) or log parameters (size axis).

``agree``: the fast mode against exact CAAP on the real DeiT-Tiny at ``--size`` px (position embeddings
resampled as timm does, ``create_model(img_size=…)``), Spearman over the patches per image on ``--images`` dev
images spread over the classes; mean and minimum. Needs ``$CAAP_DATA_DIR`` (or ``../shared/data``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from caap.bench.timing import process_memory
from caap.core.groups import spread_groups
from caap.data.real import data_dir, dev_batch, dev_files, real_deit

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir(ROOT)
PATCH_AXIS = [("vit_small_patch16_224", 224), ("vit_small_patch16_224", 384), ("vit_small_patch16_224", 512),
              ("vit_small_patch14_dinov2", 518)]
SIZE_AXIS = [("vit_tiny_patch16_224", 224), ("vit_small_patch16_224", 224), ("vit_base_patch16_224", 224),
             ("vit_large_patch16_224", 224)]
METHODS = ("caap", "caap_fast", "gae", "attnlrp")
SUBSETS = (8, 24)  # patched runs of the two subset calls of exact CAAP


def build(name: str, size: int):
    """A random-init timm model at ``size`` px (seeded) and one random input."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=size, num_classes=1000).eval()  # DINOv2: no head
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return model, image


def measure(name: str, size: int, method: str, rounds: int, threads: int, full: bool) -> dict:
    """In a fresh process: seconds of one call per round (and, for exact CAAP, the two subset calls and with
    ``full`` the whole map) and the resident-set peak of the first call above the level before it."""
    from caap.adapters import adapt
    from caap.methods import get

    torch.set_num_threads(threads)
    model, image = build(name, size)
    grid = adapt(model).grid(tuple(image.shape[-2:]))
    patches = grid[0] * grid[1]
    explainer = get(method)(model)
    out: dict = {"model": name, "size": size, "method": method,
                 "params": sum(p.numel() for p in model.parameters())}
    base = process_memory("VmRSS:")
    if method == "caap":
        calls = {k: (lambda k=k: explainer.explain(image, groups=spread_groups(grid, k))) for k in SUBSETS}
        if full:
            calls[patches] = lambda: explainer.explain(image)
    else:
        calls = {0: lambda: explainer.explain(image)}
    seconds: dict = {k: [] for k in calls}
    for round_ in range(rounds):
        for k, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[k].append(time.perf_counter() - start)
        if round_ == 0:  # the peak of the largest call (the high-water mark only rises)
            out["peak_bytes"] = process_memory("VmHWM:") - base
    if method == "caap":
        (k1, k2), best = SUBSETS, {k: min(v) for k, v in seconds.items()}
        per_run = (best[k2] - best[k1]) / (k2 - k1)
        out.update(patches=patches, subset_s={str(k): seconds[k] for k in SUBSETS}, per_patch_s=per_run,
                   shared_s=best[k1] - per_run * k1, seconds=best[k1] - per_run * k1 + per_run * patches,
                   extrapolated=True)
        if full:
            out["full_s"] = seconds[patches]
    else:
        out.update(patches=patches, seconds=min(seconds[0]), rounds_s=seconds[0], extrapolated=False)
    return out


def run_time(args: argparse.Namespace) -> dict:
    from caap.bench.provenance import record
    from caap.errors import CaapError
    from caap.io import save_json

    rows = []
    ctx = multiprocessing.get_context("spawn")
    configs = list(dict.fromkeys(PATCH_AXIS + SIZE_AXIS))
    for name, size in configs:
        for method in METHODS:
            full = method == "caap" and (name, size) == ("vit_small_patch16_224", 224)
            try:
                with ctx.Pool(1) as pool:
                    row = pool.apply(measure, (name, size, method, args.rounds, args.threads, full))
            except CaapError as exc:  # a method the model does not take: recorded, not fatal
                rows.append({"model": name, "size": size, "method": method, "refused": str(exc)})
                print(f"{name} @ {size}: {method}: refused: {exc}", flush=True)
                continue
            rows.append(row)
            if args.json:  # partial results survive an interrupted study
                save_json(args.json, {"provenance": record("cpu"), "threads": args.threads, "rounds": args.rounds,
                                      "rows": rows, "partial": True})
            extra = f" (full map {min(row['full_s']):.2f} s)" if "full_s" in row else ""
            print(f"{name} @ {size}: {method:9s} {row['seconds']:8.3f} s/image{extra}, "
                  f"peak {row['peak_bytes'] / 2**20:7.0f} MiB", flush=True)
    return {"provenance": record("cpu"), "threads": args.threads, "rounds": args.rounds, "rows": rows,
            "exponents": exponents(rows)}


def exponents(rows: list[dict]) -> dict:
    """Least-squares slopes of log seconds against log patches (patch axis) and log parameters (size axis)."""
    out: dict = {"patches": {}, "params": {}}
    for method in METHODS:
        for axis, configs, key in (("patches", PATCH_AXIS, "patches"), ("params", SIZE_AXIS, "params")):
            pts = [(r[key], r["seconds"]) for r in rows
                   if r["method"] == method and "seconds" in r and (r["model"], r["size"]) in configs]
            if len(pts) >= 2:
                x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
                out[axis][method] = float(np.polyfit(x, y, 1)[0])
    return out


def run_agree(args: argparse.Namespace) -> dict:
    from scipy.stats import spearmanr

    from caap import CAAP, FastCAAP
    from caap.bench.provenance import record

    torch.set_num_threads(args.threads)
    model = real_deit(DATA, img_size=args.size)  # preprocessing at the built size
    files = dev_files(DATA)
    files = files[:: max(1, len(files) // args.images)][: args.images]
    exact, fast = CAAP(model), FastCAAP(model)
    rows = []
    for path in files:
        image = dev_batch(model, [path])
        start = time.perf_counter()
        e = exact.explain(image)
        t_exact = time.perf_counter() - start
        start = time.perf_counter()
        f = fast.explain(image, target=e.target)
        t_fast = time.perf_counter() - start
        rho = float(spearmanr(e.scores.flatten().numpy(), f.scores.flatten().numpy()).statistic)
        rows.append({"image": path.name, "spearman": rho, "exact_s": t_exact, "fast_s": t_fast,
                     "patches": int(e.scores[0].numel())})
        print(f"{path.name}: Spearman {rho:.4f}, exact {t_exact:.1f} s, fast {t_fast:.2f} s", flush=True)
    rho = np.array([r["spearman"] for r in rows])
    return {"provenance": record("cpu"), "size": args.size, "threads": args.threads, "rows": rows,
            "spearman_mean": float(rho.mean()), "spearman_min": float(rho.min())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["time", "agree"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run_time(args) if args.what == "time" else run_agree(args)
    if args.what == "time":
        for axis, per in result["exponents"].items():
            print(f"exponent against {axis}: " + ", ".join(f"{m} {e:.2f}" for m, e in per.items()))
    else:
        print(f"Spearman fast vs exact at {args.size} px: mean {result['spearman_mean']:.4f}, "
              f"min {result['spearman_min']:.4f} over {len(result['rows'])} images")
    if args.json:
        from caap.io import save_json

        save_json(args.json, result)


if __name__ == "__main__":
    main()
