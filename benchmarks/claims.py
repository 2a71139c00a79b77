"""The claim table of docs/RESULTS.md, computed from the `caap bench` run folders of benchmarks/evidence.sh.

    python benchmarks/claims.py --runs runs --out benchmarks/results/evidence

For every claim row (a run, a metric): CAAP's (exact ``caap``) rank among the run's methods by mean (1 + the
number of methods with a strictly better mean); the best *other* method (CAAP's own modes and settings,
``caap_fast``, ``caap_adaptive``, ``caap:layers=…``, are not "other"); the paired difference CAAP − best other over
the images both have, signed so that positive favours CAAP, with its 95 % paired bootstrap interval and the
Wilcoxon p (``caap.bench.stats.paired``); and the verdict: **holds** when the interval lies above 0 (CAAP beats
every other method), **does not hold** when it lies below 0 (the best other method beats CAAP), **tie**
otherwise. Rows are computed within one run, on the same images for every method; runs with fewer images (the
slower methods) are separate rows. Missing runs are skipped and reported. Writes ``claims.md`` /
``claims.json`` (with each run's records, images, methods and wall time: first to last record written) and
copies each run's ``table.md`` / ``table.json`` / ``config.json`` (and ``compare_caap.md``) to ``OUT/<run>/``,
every file atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from caap.bench import stats
from caap.bench.store import RunStore
from caap.bench.table import per_image
from caap.io import atomic_write_bytes, save_json
from caap.metrics import METRICS

OURS = ("caap", "caap_fast", "caap_adaptive")
FAITH = ("deletion:step=14", "insertion:step=14", "positive_perturbation", "negative_perturbation")
ROAD = ("road", "road_morf", "road_lerf")
# on a grid the mask is the cell, a box on the patch grid: the four mass metrics (energy pointing game and
# relevance mass, pixel and patch) are one number for patch-level and non-negative maps, so the patch version
# (the claim table's choice, docs/EVALUATION.md) stands for all
GRID = ("pointing_game", "relevance_mass:resolution=patch")
ZOO = ("pointing_game", "energy_pointing_game:resolution=patch", "relevance_mass:resolution=patch",
       "relevance_rank", "segmentation_miou", "segmentation_ap")
# claim -> [(run folder, metrics)]
CLAIMS = {
    "more faithful (real DeiT-Tiny, ImageNet dev images)": [
        ("deit-top", FAITH), ("deit-road", ROAD), ("deit-rest", FAITH), ("deit-slow", FAITH)],
    "better localised (real DeiT-Tiny, grid pointing game)": [("grid-fast", GRID), ("grid-slow", GRID)],
    "better localised across backbones (controlled-evidence benchmark)": [
        (run, ZOO) for run in ("demo-simple", "demo-conjunction", "zoo-deit3-simple", "zoo-reg_avg-simple",
                               "zoo-clip-simple", "zoo-eva-simple", "demo-simple-slow", "demo-conjunction-slow")],
}


def claim_row(values: dict[str, dict[str, dict[int, float]]], metric: str) -> dict | None:
    """CAAP's rank, the best other method and the paired difference for one run × metric (None: no CAAP)."""
    higher = METRICS.get(metric).higher_is_better
    sign = 1.0 if higher else -1.0
    scored = {m: v[metric] for m, v in values.items() if v.get(metric)}
    if "caap" not in scored or len(scored) < 2:
        return None
    means = {m: float(np.mean(list(v.values()))) for m, v in scored.items()}
    order = sorted(means, key=lambda m: (-sign * means[m], m))  # best first; ties by name

    def rank(method: str) -> int:  # competition ranking: 1 + the methods strictly better
        return 1 + sum(sign * means[m] > sign * means[method] for m in means)

    other = next(m for m in order if m.split(":")[0] not in OURS)
    d = stats.paired({i: sign * x for i, x in scored["caap"].items()}, {i: sign * x for i, x in scored[other].items()})
    verdict = "holds" if d["low"] > 0 else "does not hold" if d["high"] < 0 else "tie"
    return {"metric": metric, "higher_is_better": higher, "rank": rank("caap"), "methods": len(order),
            "caap": means["caap"], "best_other": other, "other": means[other], "diff": d["mean"], "low": d["low"],
            "high": d["high"], "p": d["p"], "n": d["n"], "verdict": verdict,
            "caap_fast_rank": rank("caap_fast") if "caap_fast" in means else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result: dict = {}
    runs: dict = {}
    missing = []
    lines = ["| claim | run | metric | CAAP's rank | CAAP | best other | its value | CAAP − other (favouring CAAP) "
             "[95 % CI] | p | n | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for claim, rows in CLAIMS.items():
        for run, metrics in rows:
            root = args.runs / run
            if not (root / "config.json").is_file():
                missing.append(run)
                continue
            values = per_image(RunStore(root), json.loads((root / "config.json").read_text())["methods"])
            for metric in metrics:
                row = claim_row(values, metric)
                if row is None:
                    continue
                result.setdefault(claim, []).append({"run": run, **row})
                arrow = "↑" if row["higher_is_better"] else "↓"
                lines.append(
                    f"| {claim} | {run} | {metric} {arrow} | {row['rank']} of {row['methods']} | {row['caap']:.3f} | "
                    f"{row['best_other']} | {row['other']:.3f} | {row['diff']:+.3f} [{row['low']:+.3f}, "
                    f"{row['high']:+.3f}] | {row['p']:.2g} | {row['n']} | {row['verdict']} |")
            stamps = [p.stat().st_mtime for p in (root / "records").glob("*.json")]
            runs[run] = {
                "records": len(stamps), "images": len({i for v in values.values() for m in v.values() for i in m}),
                "methods": sorted(values), "wall_minutes": (max(stamps) - min(stamps)) / 60 if stamps else None}
            dest = args.out / run
            for name in ("table.md", "table.json", "config.json", "compare_caap.md"):
                if (root / name).is_file():
                    atomic_write_bytes(dest / name, (root / name).read_bytes())
    if missing:
        lines += ["", "Runs not found: " + ", ".join(missing)]
    save_json(args.out / "claims.json", {"claims": result, "runs": runs, "missing": missing})
    atomic_write_bytes(args.out / "claims.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
