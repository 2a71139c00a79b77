"""How close CAAP's two-point estimate (``direction=both``) comes to the Shapley value of each patch over the
coalitions of patched tokens, against estimators that sample more coalitions, on models small enough to enumerate
every coalition (issue 25, docs/DIRECTIONS.md).

    python benchmarks/shapley.py [--images 4] [--out benchmarks/results/shapley.json]

The game of an image: players are the ``n`` patches of a 4 × 4 grid; ``v(S)`` is the target logit of the context
run in which the tokens of ``S`` carry the source's stream at the patched blocks (``v(∅)``: the context run,
``v(all)``: the source run). Every ``v(S)`` (``2^16`` coalitions) is computed with CAAP's exact engine (one group per
coalition), so the Shapley value is exact. Estimators, by their cost in coalitions evaluated per player:
denoising (``v({p}) − v(∅)``), noising (``v(all) − v(all∖{p})``), their mean (2), stratified sampling (``m`` random
coalitions at each of ``k`` sizes spread over ``0 … n−1``, weighted equally as the Shapley weights weight sizes:
``2·k·m``), and permutation sampling (``T`` orderings, ``T·(n+1)/n``). Reported: the error relative to the mean
absolute Shapley value, and the Spearman rank correlation with the exact values, over images and models (random-
init tiny ViTs of two architectures, and a tiny ViT trained on the controlled-evidence benchmark's 32 px crops is
not available, so random-init only: the claim is about the estimator, not about a model).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from caap.io import save_json
from caap.methods.caap.coalitions import exact_shapley, game, permutations, stratified

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "shapley.json")
    args = parser.parse_args()
    from caap.adapters import tiny as archs

    torch.set_num_threads(2)
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for arch, seed in itertools.product(("timm_vit", "timm_registers"), range(args.images)):
        model = archs.build(arch, seed=seed)
        x = torch.randn(1, 3, archs.IMG, archs.IMG, generator=torch.Generator().manual_seed(100 + seed))
        with torch.no_grad():
            target = int(model(x).argmax())
        n = archs.GRID[0] * archs.GRID[1]
        v = game(model, x, target, [1, 2], archs.GRID)
        phi = exact_shapley(v, n)
        full = (1 << n) - 1
        rng = np.random.default_rng(seed)
        estimates = {
            "denoise (1 run/player)": (np.array([v[1 << p] for p in range(n)]), 1),
            "noise (1 run/player)": (np.array([v[full] - v[full ^ (1 << p)] for p in range(n)]), 1),
        }
        estimates["both: (denoise + noise) / 2 (2 runs/player)"] = (
            (estimates["denoise (1 run/player)"][0] + estimates["noise (1 run/player)"][0]) / 2, 2)
        for sizes, m in ((3, 1), (5, 1), (5, 4), (8, 8)):
            estimates[f"stratified {sizes} sizes x {m} ({2 * sizes * m} runs/player)"] = (
                stratified(v, n, sizes, m, rng), 2 * sizes * m)
        for t in (2, 8, 32):
            estimates[f"permutations x {t} ({t * (n + 1) / n:.1f} runs/player)"] = (permutations(v, n, t, rng),
                                                                                    t * (n + 1) / n)
        scale = np.abs(phi).mean()
        for name, (est, cost) in estimates.items():
            rows.setdefault(name, []).append((float(np.abs(est - phi).mean() / scale),
                                              float(spearmanr(est, phi)[0]), float(cost)))
        print(f"{arch} seed {seed}: done", file=sys.stderr, flush=True)
    summary = {name: {"relative_error_mean": float(np.mean([r[0] for r in rs])),
                      "relative_error_max": float(np.max([r[0] for r in rs])),
                      "spearman_mean": float(np.mean([r[1] for r in rs])),
                      "spearman_min": float(np.min([r[1] for r in rs])), "runs_per_player": rs[0][2],
                      "games": len(rs)} for name, rs in rows.items()}
    save_json(args.out, {"players": 16, "layers": [1, 2], "summary": summary, "per_game": rows})
    print("| estimator | runs per player | error / mean abs Shapley (mean, max) | Spearman (mean, min) |")
    print("|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['runs_per_player']:.1f} | {s['relative_error_mean']:.3f}, {s['relative_error_max']:.3f} "
              f"| {s['spearman_mean']:.3f}, {s['spearman_min']:.3f} |")


if __name__ == "__main__":
    main()
