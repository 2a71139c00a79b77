"""How closely the fast mode ranks patches as exact CAAP does in the chosen variants' own bands and contexts, from
the maps of a confirmation run (``deit-directions``: exact and fast maps of each chosen variant, the same images).

    python benchmarks/directions_agreement.py runs/deit-directions --out benchmarks/results/directions_agreement.json

Per image: the Spearman rank correlation of the fast map with the exact one and the overlap of their top 10 %
patches; per variant: means with 95 % bootstrap intervals (:func:`caap.bench.stats.cell`) and minima, and the
median seconds per map of each (one image per call, inside the run). Every image's values are in the output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from caap.bench import stats
from caap.bench.store import RunStore
from caap.io import save_json
from caap.metrics.sanity import top_overlap


def agreement(exact: np.ndarray, fast: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and the top-10 % overlap (as benchmarks/fast_agreement.py computes it) of two maps."""
    return float(spearmanr(exact.ravel(), fast.ravel())[0]), top_overlap(torch.from_numpy(exact),
                                                                         torch.from_numpy(fast))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    store = RunStore(args.run)
    config = json.loads((args.run / "config.json").read_text())
    fast_specs = [m for m in config["methods"] if m.startswith("caap_fast:")]
    records = store.by_method(config["methods"])
    out = {"run": args.run.name, "commit": config["info"]["code"]["commit"], "variants": {}}
    for fast in fast_specs:
        exact = fast.replace("caap_fast:", "caap:", 1)
        images = sorted(set(records[exact]) & set(records[fast]))
        rows = {i: agreement(store.load_map(i, exact), store.load_map(i, fast)) for i in images}
        rho, top = {i: r[0] for i, r in rows.items()}, {i: r[1] for i, r in rows.items()}
        seconds = {k: float(np.median([records[s][i]["seconds"] for i in images])) for k, s in
                   (("exact", exact), ("fast", fast))}
        out["variants"][exact] = {
            "images": len(images), "spearman": {**stats.cell(rho), "min": min(rho.values())},
            "top10_overlap": {**stats.cell(top), "min": min(top.values())}, "seconds_median": seconds,
            "per_image": {str(i): {"spearman": rho[i], "top10_overlap": top[i]} for i in images}}
        r, t = out["variants"][exact]["spearman"], out["variants"][exact]["top10_overlap"]
        print(f"{exact}: {len(images)} images, Spearman {r['mean']:.4f} [{r['low']:.4f}, {r['high']:.4f}] "
              f"(min {r['min']:.3f}), top-10 % {t['mean']:.3f} (min {t['min']:.2f}), s/map exact "
              f"{seconds['exact']:.2f}, fast {seconds['fast']:.2f}")
    save_json(args.out, out)


if __name__ == "__main__":
    main()
