"""The fast mode where it is weakest: the embedded demo models (65 tokens, a 4-block band, evidence that may need
two parts together), against exact CAAP (docs/FAST.md, "Where it weakens").

    python benchmarks/fast_demo.py [--images 32] [--out benchmarks/results/fast_demo.json]

Per variant (simple, conjunction), on the first ``--images`` balanced images of the demo generator: the Pearson and
Spearman correlation of each fast map with the exact one (per image, then mean and minimum), and the share of
images whose top patch lies on the class object, fast and exact (the pointing game of ``caap demo``), for the
models' default band and for the bands 0:2, 2:4 and 3:4.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from caap import CAAP, FastCAAP
from caap.adapters.demo import load_demo_model, normalize_uint8
from caap.data.synthetic import SyntheticConfig, generate_batch
from caap.io import save_json
from caap.metrics import pointing_game_hits

ROOT = Path(__file__).resolve().parents[1]
BANDS = (None, "0:2", "2:4", "3:4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fast_demo.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = {}
    for variant in ("simple", "conjunction"):
        model = load_demo_model(variant)
        batch = generate_batch(SyntheticConfig(variant=variant), 0, args.images, balanced=True)
        x = normalize_uint8(batch["images"])
        for band in BANDS:
            options = {} if band is None else {"layers": band}
            exact = CAAP(model, **options).explain(x, progress=False)
            fast = FastCAAP(model, **options).explain(x, target=exact.target, progress=False)
            pear = [pearsonr(a.flatten(), b.flatten())[0] for a, b in zip(exact.scores, fast.scores, strict=True)]
            spear = [spearmanr(a.flatten(), b.flatten())[0] for a, b in zip(exact.scores, fast.scores, strict=True)]
            result[f"{variant} {band or 'default ' + str(exact.meta['layers'])}"] = {
                "images": args.images, "pearson_mean": float(np.mean(pear)), "pearson_min": float(np.min(pear)),
                "spearman_mean": float(np.mean(spear)), "spearman_min": float(np.min(spear)),
                "pointing_game_exact": float(pointing_game_hits(exact.scores, batch["masks"]).float().mean()),
                "pointing_game_fast": float(pointing_game_hits(fast.scores, batch["masks"]).float().mean())}
            print(list(result)[-1], result[list(result)[-1]], flush=True)
    save_json(args.out, result)


if __name__ == "__main__":
    main()
