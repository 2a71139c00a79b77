"""What coarse-to-fine CAAP trades: patched runs, rank correlation and faithfulness against exact CAAP.

    caap bench --model deit_tiny_patch16_224 --weights W --data DIR --methods caap,caap_adaptive \
        --metrics deletion:step=14,insertion:step=14 --out RUN
    python benchmarks/refine.py RUN [--exact caap] [--fast caap_adaptive]

Reads the maps and records of a finished ``caap bench`` run that holds both methods, and prints per image
means of: patched runs (recorded by the engine), the Spearman rank correlation of
the fast map with the exact one (and the ceiling of any superpatch scheme with the same budget: exact values
in the best superpatches, exact superpatch means elsewhere), and each faithfulness metric of both with the
relative change.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from caap.bench.store import RunStore
from caap.core.groups import superpatch_groups


def oracle(exact: np.ndarray, groups: np.ndarray, refined: int) -> np.ndarray:
    """The best map a superpatch-share scheme can give: every superpatch at its mean of the exact map, and the
    exact values inside the highest-mean superpatches up to ``refined`` patches."""
    sizes = np.bincount(groups)
    means = np.bincount(groups, weights=exact) / sizes
    out = means[groups]
    budget = refined
    for g in np.argsort(-means):
        if sizes[g] > budget:
            break
        out[groups == g] = exact[groups == g]
        budget -= sizes[g]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--exact", default="caap")
    parser.add_argument("--fast", default="caap_adaptive")
    args = parser.parse_args()
    store = RunStore(args.run)
    records = store.by_method([args.exact, args.fast])
    common = sorted(set(records[args.exact]) & set(records[args.fast]))
    if not common:
        raise SystemExit(f"no image has both {args.exact} and {args.fast} in {args.run}")
    grid = store.load_map(common[0], args.exact).shape
    meta = records[args.fast][common[0]].get("meta", {})
    coarse = superpatch_groups(grid, int(meta.get("coarse", 2))).ravel().numpy()
    rho, ceiling = [], []
    for i in common:
        a, b = store.load_map(i, args.exact).ravel(), store.load_map(i, args.fast).ravel()
        rho.append(spearmanr(a, b)[0])
        ceiling.append(spearmanr(a, oracle(a, coarse, records[args.fast][i]["meta"].get("refined_patches", 0)))[0])
    exact_runs, fast_runs = (np.mean([records[m][i]["meta"]["patched_runs"] for i in common])
                             for m in (args.exact, args.fast))
    print(f"{len(common)} images, grid {grid[0]}x{grid[1]}")
    print(f"patched runs per image: {args.exact} {exact_runs:.0f}, {args.fast} {fast_runs:.0f} "
          f"({exact_runs / fast_runs:.2f}x fewer)")
    print(f"Spearman({args.fast}, {args.exact}): mean {np.mean(rho):.3f}, median {np.median(rho):.3f}, "
          f"min {np.min(rho):.3f}")
    seconds = [np.mean([records[m][i]["seconds"] for i in common]) for m in (args.exact, args.fast)]
    print(f"ceiling: exact values on the best superpatches with as many refined patches, exact superpatch means "
          f"elsewhere: mean Spearman {np.mean(ceiling):.3f}")
    print(f"seconds per image: {seconds[0]:.2f} vs {seconds[1]:.2f}")
    for metric in records[args.exact][common[0]]["metrics"]:
        e = np.mean([records[args.exact][i]["metrics"][metric] for i in common])
        f = np.mean([records[args.fast][i]["metrics"][metric] for i in common])
        print(f"{metric:24s} {args.exact} {e:.4f}  {args.fast} {f:.4f}  change {(f - e) / abs(e):+.2%}")


if __name__ == "__main__":
    main()
