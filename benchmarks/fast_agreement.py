"""How closely CAAP's fast mode reproduces exact CAAP on the real DeiT-Tiny and the ImageNet dev images.

    python benchmarks/fast_agreement.py --out runs/fast_agreement [--every K] [--limit N] [--layers 4:8]

Per image (target: its label, as in ``caap bench``), for patch groups of 1, 2x2 and 4x4 patches: the
Spearman rank correlation of the fast map with the exact one (over groups, one value each), the overlap of
their top 10 % patches (groups of 1), and the deletion and insertion AUC (patch grid, step 14, as in
docs/RESULTS.md) of both maps. Also the two refinements that ``caap_adaptive`` could be: coarse-to-fine
(exact 2x2 superpatches, then exact single patches in the top 8 %) and fast-then-exact (the fast map, then
exact single patches for its top 8 %): their Spearman with exact, deletion, insertion and seconds. One JSON
record per image is written atomically as soon as it exists, so a
killed run resumes where it stopped; ``summary.json`` / ``summary.md`` are rewritten at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from devset import real_deit_tiny, resumable
from scipy.stats import spearmanr

from caap import CAAP
from caap.core.groups import superpatch_groups
from caap.io import atomic_write_bytes, save_json
from caap.metrics import build

SIZES = (1, 2, 4)
MAPS = ("exact", "fast", "coarse_to_fine", "fast_then_exact")


def group_values(scores: torch.Tensor, groups: torch.Tensor) -> np.ndarray:
    """One value per group of a map ``[gh, gw]`` (every patch of a group carries the group's score)."""
    flat, ids = scores.flatten(), groups.flatten()
    first = torch.stack([(ids == g).nonzero()[0, 0] for g in torch.unique(ids)])
    return flat[first].numpy()


def record(image: torch.Tensor, label: int, explainers: dict, metrics: dict, grid: tuple[int, int]) -> dict:
    x = image[None]
    out: dict = {"label": label, "spearman": {}, "seconds": {}}
    maps = {}
    for size in SIZES:
        groups = superpatch_groups(grid, size)
        for mode in ("exact", "fast"):
            start = time.perf_counter()
            att = explainers[mode].explain(x, target=[label], groups=None if size == 1 else groups)
            out["seconds"][f"{mode}_{size}"] = time.perf_counter() - start
            maps[mode, size] = att.scores[0]
        a, b = (group_values(maps[m, size], groups) for m in ("exact", "fast"))
        out["spearman"][str(size)] = float(spearmanr(a, b)[0])
    for name in ("coarse_to_fine", "fast_then_exact"):
        start = time.perf_counter()
        maps[name, 1] = explainers[name].explain(x, target=[label]).scores[0]
        out["seconds"][name] = time.perf_counter() - start
        out["spearman"][name] = float(spearmanr(maps["exact", 1].flatten(), maps[name, 1].flatten())[0])
    exact, fast = maps["exact", 1].flatten(), maps["fast", 1].flatten()
    k = math.ceil(0.1 * exact.numel())
    out["top10_overlap"] = len(set(exact.topk(k).indices.tolist()) & set(fast.topk(k).indices.tolist())) / k
    target = torch.tensor([label])
    for name, metric in metrics.items():
        for mode in MAPS:
            out[f"{name}_{mode}"] = float(metric(explainers[mode].model, x, target, maps[mode, 1][None])[0])
    return out


def summarize(records: list[dict], out: Path, settings: dict) -> dict:
    def stats(values) -> dict:
        v = np.asarray(values, dtype=np.float64)
        se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
        return {"mean": float(v.mean()), "se": se, "min": float(v.min()), "n": len(v)}

    summary = {"settings": settings, "images": len(records),
               "spearman": {str(s): stats([r["spearman"][str(s)] for r in records])
                            for s in (*SIZES, "coarse_to_fine", "fast_then_exact")},
               "top10_overlap": stats([r["top10_overlap"] for r in records]),
               "seconds": {k: stats([r["seconds"][k] for r in records]) for k in records[0]["seconds"]}}
    for name in ("deletion", "insertion"):
        summary[name] = {mode: stats([r[f"{name}_{mode}"] for r in records]) for mode in MAPS}
        for mode in MAPS[1:]:
            summary[name][f"{mode}_minus_exact"] = stats([r[f"{name}_{mode}"] - r[f"{name}_exact"] for r in records])
    save_json(out / "summary.json", summary)
    lines = [f"# Fast vs exact CAAP: {len(records)} images, {settings['model']}, layers {settings['layers']}", "",
             "| map (Spearman with exact) | mean ± SE | min |", "|---|---|---|"]
    for s in (*SIZES, "coarse_to_fine", "fast_then_exact"):
        v = summary["spearman"][str(s)]
        label = f"fast, {s}x{s}" if isinstance(s, int) else s
        lines.append(f"| {label} | {v['mean']:.4f} ± {v['se']:.4f} | {v['min']:.4f} |")
    v = summary["top10_overlap"]
    lines += ["", f"Top-10 % patch overlap (fast, 1x1): {v['mean']:.3f} ± {v['se']:.3f} (min {v['min']:.2f})", "",
              "| map | deletion ↓ | − exact (paired) | insertion ↑ | − exact (paired) |", "|---|---|---|---|---|"]
    for mode in MAPS:
        cells = []
        for name in ("deletion", "insertion"):
            v = summary[name][mode]
            d = summary[name].get(f"{mode}_minus_exact")
            cells += [f"{v['mean']:.4f} ± {v['se']:.4f}", f"{d['mean']:+.4f} ± {d['se']:.4f}" if d else "—"]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    sec = summary["seconds"]
    lines += ["", "Seconds per image (one image per call): " + ", ".join(
        f"{k} {sec[k]['mean']:.3f}" for k in sorted(sec))]
    atomic_write_bytes(out / "summary.md", ("\n".join(lines) + "\n").encode())
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--layers", default="4:8")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, data, indices = real_deit_tiny(args.every, args.limit)
    explainers = {"exact": CAAP(model, layers=args.layers), "fast": CAAP(model, layers=args.layers, mode="fast"),
                  "coarse_to_fine": CAAP(model, layers=args.layers, refine=0.08),
                  "fast_then_exact": CAAP(model, layers=args.layers, mode="fast", refine=0.08)}
    metrics = {"deletion": build("deletion:step=14"), "insertion": build("insertion:step=14")}
    settings = {"model": "deit_tiny_patch16_224 (real)", "layers": args.layers, "every": args.every,
                "limit": args.limit, "torch": torch.__version__, "threads": args.threads}
    records = list(resumable(data, indices, args.out / "records",
                             lambda item: record(item.image, item.label, explainers, metrics, (14, 14))).values())
    summary = summarize(records, args.out, settings)
    print((args.out / "summary.md").read_text())
    print(json.dumps(summary["spearman"], indent=1))


if __name__ == "__main__":
    main()
