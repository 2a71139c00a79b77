"""ROAD's noisy linear imputation: what each sparse solver available here costs on the same systems.

    python benchmarks/road_solvers.py [--maps 3] [--threads 1] [--json benchmarks/results/road_solvers.json]

For ``--maps`` random patch-level maps on a 224 px image, both removal orders (MoRF, LeRF) and the nine shares, the
system of ``caap.metrics.road.linear_impute`` (``imputation_system``: every removed pixel the weighted mean of its 8
neighbours) is solved by: SciPy's ``spsolve`` (SuperLU, COLAMD; what ROAD uses), SuperLU with the ``MMD_AT_PLUS_A``
ordering for a structurally symmetric matrix, SuperLU in float32, and LAPACK's banded Cholesky (``solveh_banded``:
the system negated is symmetric positive definite, its bandwidth at most W + 1 in raster order), and SuperLU on the
unknowns in a geometric nested-dissection order of the pixel grid (:func:`nested_dissection`; the 8-neighbour
stencil is cut by one row or column, so the two halves decouple). Seconds per order (nine solves, building included)
and the largest difference from ``spsolve``'s imputation are printed and saved; the ratio is measured in the same
run. The run also times the real DeiT-Tiny's nine forwards per order on the same thread (with ``$CAAP_DATA_DIR``; a
random-init one otherwise): the bound on ROAD's per-map speed-up from any solver is (solves + forwards) / forwards.
The project asks ROAD for 10× per map on the same CPU; see docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy.linalg import solveh_banded
from scipy.sparse.linalg import splu, spsolve

from caap.bench.provenance import record
from caap.metrics import road

ROOT = Path(__file__).resolve().parents[1]


def nested_dissection(h: int, w: int, leaf: int = 64) -> np.ndarray:
    """int64 ``[H * W]``: each pixel's place in a nested-dissection order of the grid — halves first (each in its
    own nested order), the separating row or column last, down to blocks of ``leaf`` pixels in raster order."""
    order: list[np.ndarray] = []

    def split(r0: int, r1: int, c0: int, c1: int) -> None:
        if (r1 - r0) * (c1 - c0) <= leaf:
            rows, cols = np.mgrid[r0:r1, c0:c1]
            order.append((rows * w + cols).ravel())
        elif r1 - r0 >= c1 - c0:
            m = (r0 + r1) // 2
            split(r0, m, c0, c1), split(m + 1, r1, c0, c1)
            order.append(m * w + np.arange(c0, c1))
        else:
            m = (c0 + c1) // 2
            split(r0, r1, c0, m), split(r0, r1, m + 1, c1)
            order.append(np.arange(r0, r1) * w + m)

    split(0, h, 0, w)
    place = np.empty(h * w, dtype=np.int64)
    place[np.concatenate(order)] = np.arange(h * w)
    return place


PLACE = nested_dissection(224, 224)


def dissected(pairs, diagonal, rhs, missing):
    p = np.argsort(PLACE[missing])
    a = road.imputation_matrix(pairs, diagonal)[p][:, p].tocsc()
    lu = splu(a, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    x = np.empty_like(rhs)
    x[p] = lu.solve(rhs[p])
    return x


def banded(pairs, diagonal, rhs, missing):
    upper = [(i[j > i], j[j > i], w) for i, j, w in pairs]
    u = max([int((j - i).max()) for i, j, _ in upper if i.size] + [0])
    ab = np.zeros((u + 1, diagonal.size))
    ab[u] = diagonal
    for i, j, w in upper:
        ab[u - (j - i), j] = -w
    return solveh_banded(ab, rhs, check_finite=False)


SOLVERS = {  # each takes imputation_system's (pairs, diagonal, rhs, missing)
    "spsolve (ROAD's)": lambda p, d, b, m: spsolve(road.imputation_matrix(p, d), b),
    "SuperLU MMD_AT_PLUS_A": lambda p, d, b, m: splu(road.imputation_matrix(p, d), permc_spec="MMD_AT_PLUS_A",
                                                     options={"SymmetricMode": True}).solve(b),
    "SuperLU float32": lambda p, d, b, m: splu(road.imputation_matrix(p, d, np.float32), permc_spec="MMD_AT_PLUS_A",
                                               options={"SymmetricMode": True}).solve(b.astype(np.float32)),
    "banded Cholesky (LAPACK)": banded,
    "SuperLU, nested dissection": dissected,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, 224, 224, generator=gen)
    values = image.double().reshape(3, -1).numpy()
    keys = road.tie_keys((224, 224), (14, 14), 0)
    seconds = {name: [] for name in SOLVERS}
    error = dict.fromkeys(SOLVERS, 0.0)
    for _ in range(args.maps):
        saliency = torch.rand(14, 14, generator=gen).repeat_interleave(16, 0).repeat_interleave(16, 1).numpy()
        for morf in (True, False):
            order = road.removal_order(saliency, keys, morf)
            keeps = [road.exact_keep(order, (224, 224), share) for share in road.PERCENTILES]
            reference = [road.linear_impute(image, keep) for keep in keeps]
            for name, solve in SOLVERS.items():
                start = time.perf_counter()
                for keep, ref in zip(keeps, reference, strict=True):
                    pairs, diagonal, rhs, missing = road.imputation_system(keep, values)
                    x = np.asarray(solve(pairs, diagonal, rhs, missing), dtype=np.float64).reshape(missing.size, -1)
                    got = ref.reshape(3, -1).clone()
                    got[:, missing] = torch.from_numpy(x.T).float()
                    error[name] = max(error[name], float((got - ref.reshape(3, -1)).abs().max()))
                seconds[name].append(time.perf_counter() - start)
    base = np.median(seconds["spsolve (ROAD's)"])
    forward = forward_seconds(args.maps * 2)
    rows = []
    for name, s in seconds.items():
        rows.append({"solver": name, "median_s_per_order": float(np.median(s)), "seconds": s,
                     "speedup_vs_spsolve": float(base / np.median(s)), "max_abs_diff": error[name]})
        print(f"{name:26s} {np.median(s):6.2f} s per order (9 solves)  {base / np.median(s):5.2f}x  "
              f"max |diff| {error[name]:.1e}")
    if args.json:
        from caap.io import save_json

        save_json(args.json, {"provenance": record("cpu"), "threads": args.threads, "maps": args.maps, "rows": rows,
                              "forward": forward})
    f = forward["median_s_per_order"]
    best = min(np.median(v) for v in seconds.values())
    print(f"the model's 9 forwards per order ({forward['model']}): {f:.2f} s; per order today "
          f"{base + f:.2f} s, with the fastest solver {best + f:.2f} s ({(base + f) / (best + f):.2f}x), "
          f"with a free solver {f:.2f} s ({(base + f) / f:.2f}x: the bound on any solver's per-map speed-up)")


def forward_seconds(rounds: int) -> dict:
    """Seconds of the nine forwards ROAD runs per order (one batch of nine 224 px images), median of ``rounds``."""
    from caap.adapters import create_model

    data = Path(os.environ.get("CAAP_DATA_DIR", ROOT.parent / "shared" / "data"))
    weights = data / "deit_tiny_patch16_224.safetensors"
    real = weights.is_file()
    model = create_model("deit_tiny_patch16_224", str(weights) if real else None).eval()
    batch = torch.rand(9, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    times = []
    with torch.inference_mode():
        model(batch[:1])
        for _ in range(rounds):
            start = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - start)
    return {"model": "real DeiT-Tiny" if real else "random-init DeiT-Tiny", "seconds": times,
            "median_s_per_order": float(np.median(times))}


if __name__ == "__main__":
    main()
