"""The directions study's steps on the command line (the rule and the runs: caap.bench.selection).

    caap bench ... --every 2 --methods "$(python benchmarks/directions.py variants)" --metrics "$(... metrics)" \
        --out runs/directions-select                                         # the selection half (even positions)
    python benchmarks/directions.py choose runs/directions-select           # -> chosen.json and the sweep table
    python benchmarks/directions.py choose benchmarks/results/evidence/directions-select --write docs/DIRECTIONS.md
    caap bench ... --every 2 --offset 1 --methods "$(python benchmarks/directions.py confirm runs/directions-select)"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from caap.bench.evidence import replace_blocks
from caap.bench.selection import CONFIRM, DEPTH, METRICS, choose, confirm_specs, table, variants
from caap.bench.store import RunStore
from caap.io import atomic_write_bytes, save_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("variants")
    sub.add_parser("metrics")
    p = sub.add_parser("choose")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--write", type=Path, help="fill the 'directions' block of this Markdown file with the sweep")
    p = sub.add_parser("confirm")
    p.add_argument("run", type=Path)
    p.add_argument("--for", dest="purpose", choices=sorted(CONFIRM), default="faith")
    p.add_argument("--depth", type=int, default=DEPTH, help="the model's blocks (the band scaled to them)")
    args = parser.parse_args()
    if args.command == "variants":
        print(",".join(variants()))
    elif args.command == "metrics":
        print(",".join(METRICS))
    elif args.command == "choose":
        result = choose(RunStore(args.run).scores().values)
        save_json((args.out or args.run) / "chosen.json", result)
        print(table(result), end="")
        print("chosen:", json.dumps(result["chosen"]))
        if args.write:
            text = replace_blocks(args.write.read_text(), {"directions": table(result)})
            atomic_write_bytes(args.write, text.encode())
    else:
        print(",".join(confirm_specs(json.loads((args.run / "chosen.json").read_text()), args.purpose, args.depth)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
