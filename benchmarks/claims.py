"""The claim table and every generated block of docs/RESULTS.md, rebuilt from the per-image scores in the repository
(``benchmarks/results/evidence/<run>/scores.csv`` + ``config.json``) by the package (caap.bench.evidence,
caap.bench.evidence_tables; the rule: caap.bench.verdict, docs/EVALUATION.md).

    python benchmarks/claims.py --import-runs runs      # scores.csv + config.json of each run folder -> RESULTS_DIR
    python benchmarks/claims.py                         # print the claim table
    python benchmarks/claims.py --write docs/RESULTS.md # rewrite the generated blocks of RESULTS.md
    python benchmarks/claims.py --check docs/RESULTS.md # exit 1 when a generated block differs
"""

from __future__ import annotations

import argparse
from pathlib import Path

from caap.bench.evidence import import_runs, load, replace_blocks, stale_blocks
from caap.bench.evidence_tables import blocks, claims_record, write_frontier_figures
from caap.io import atomic_write_bytes, save_json

RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "evidence"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--import-runs", type=Path, help="copy scores.csv + config.json of each run folder here")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, help="rewrite the generated blocks of this Markdown file")
    group.add_argument("--check", type=Path, help="exit 1 when a generated block of this file differs")
    args = parser.parse_args()
    if args.import_runs:
        import_runs(args.import_runs, args.results)
    runs = load(args.results)
    generated = blocks(runs, args.results)
    save_json(args.results / "claims.json", claims_record(runs, args.results))
    atomic_write_bytes(args.results / "claims.md", "\n".join(generated[k] for k in ("claims", "claims-subsets",
                                                                                     "claims-zoo")).encode())
    if args.check:
        stale = stale_blocks(args.check.read_text(), generated)
        print("\n".join(f"stale: {n}" for n in stale) or "up to date")
        return 1 if stale else 0
    if args.write:
        atomic_write_bytes(args.write, replace_blocks(args.write.read_text(), generated).encode())
        write_frontier_figures(runs, args.write.parent / "figures")
    print(generated["claims"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
