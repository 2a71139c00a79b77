"""Issue 25's study: which direction, band and context of CAAP to test, chosen on one half of the dev images and
confirmed on the other.

    caap bench ... --every 2 --methods "$(python benchmarks/directions.py variants)" --metrics "$(... metrics)" \
        --out runs/directions-select                                         # the selection half (even positions)
    python benchmarks/directions.py choose runs/directions-select           # -> chosen.json and the sweep table
    caap bench ... --methods "$(python benchmarks/directions.py confirm runs/directions-select)" ...   # all images

The variants are fast-mode maps (``caap_fast``: a few forwards each, so the whole grid is affordable) of every
direction × band × context in :data:`BANDS` × :data:`CONTEXTS`. The rule, fixed before looking: among the
``both`` variants (the symmetric one the issue asks about) and separately among the ``noise`` ones, the variant with
the highest mean over the images and the two canvases of ``insertion − deletion``; ties (within 1e-4) go to the
middle band and the mean context. The chosen variants are then run on every image, exact and fast, and judged on
the odd positions only (the confirmation half) against every baseline by benchmarks/claims.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from caap.bench.store import RunStore
from caap.bench.table import per_image
from caap.io import save_json

BANDS = ("2:6", "4:8", "6:10", "8:12")
CONTEXTS = ("mean", "blur")
DIRECTIONS = ("denoise", "noise", "both")
METRICS = ("deletion:step=14", "deletion:step=14:canvas=blur", "insertion:step=14", "insertion:step=14:canvas=mean")


def variant(direction: str, band: str, context: str, kind: str = "caap_fast") -> str:
    return f"{kind}:direction={direction}:layers={band}:context={context}"


def variants() -> list[str]:
    return [variant(d, b, c) for d in DIRECTIONS for b in BANDS for c in CONTEXTS]


def criterion(values: dict[str, dict[int, float]]) -> dict[int, float]:
    """Per image: the mean over the two canvases of insertion − deletion (higher is better)."""
    dele = [values[m] for m in METRICS if m.startswith("deletion")]
    ins = [values[m] for m in METRICS if m.startswith("insertion")]
    images = sorted(set.intersection(*(set(v) for v in dele + ins)))
    return {i: float(np.mean([v[i] for v in ins]) - np.mean([v[i] for v in dele])) for i in images}


def choose(scores: dict[str, dict[str, dict[int, float]]]) -> dict:
    """The rule of the module docstring on ``{variant: {metric: {image: value}}}``; also every variant's means."""
    table = {}
    for spec, values in scores.items():
        if not all(values.get(m) for m in METRICS):
            continue
        table[spec] = {"criterion": float(np.mean(list(criterion(values).values()))),
                       **{m: float(np.mean(list(values[m].values()))) for m in METRICS},
                       "images": len(criterion(values))}
    chosen = {}
    for direction in ("both", "noise"):
        candidates = [s for s in table if f"direction={direction}:" in s]
        if not candidates:
            continue

        def key(spec: str) -> tuple:
            band = spec.split("layers=")[1].split(":context")[0]
            return (round(table[spec]["criterion"], 4), band == "4:8", spec.endswith("context=mean"))

        chosen[direction] = max(candidates, key=key)
    return {"rule": __doc__.split("The rule, fixed before looking: ")[1].split(" The chosen")[0].replace("\n", " "),
            "chosen": chosen, "variants": table}


def confirm_specs(chosen: dict) -> list[str]:
    """The chosen variants as exact and fast methods, beside the paper's CAAP."""
    out = ["caap"]
    for spec in chosen["chosen"].values():
        out += [spec.replace("caap_fast:", "caap:", 1), spec]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("variants")
    sub.add_parser("metrics")
    p = sub.add_parser("choose")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path)
    p = sub.add_parser("confirm")
    p.add_argument("run", type=Path)
    args = parser.parse_args()
    if args.command == "variants":
        print(",".join(variants()))
    elif args.command == "metrics":
        print(",".join(METRICS))
    elif args.command == "choose":
        config = json.loads((args.run / "config.json").read_text())
        result = choose(per_image(RunStore(args.run), config["methods"]))
        save_json((args.out or args.run) / "chosen.json", result)
        for spec, row in sorted(result["variants"].items(), key=lambda kv: -kv[1]["criterion"]):
            print(f"{row['criterion']:+.4f}  {spec}  ({row['images']} images)")
        print("chosen:", json.dumps(result["chosen"]))
    else:
        print(",".join(confirm_specs(json.loads((args.run / "chosen.json").read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
