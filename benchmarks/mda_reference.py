"""MDA against the authors' maps (``../shared/reference/deit_tiny_dev8``, README §2): the real DeiT-Tiny, the 8
reference inputs and the authors' targets, default settings (SLIC, Bi-Attn order, 28 candidates, cutoff 0.9).

    python benchmarks/mda_reference.py [--images 0,1,...] [--out benchmarks/results/mda_reference.json]

Per image: seconds, forward passes, the insertion prefix, and the agreement of the maps — top-10 segments in
common, Spearman over the segments either map gives a value >= 1e-4 (the rest are ties at ~0), Spearman over the
pixels of the returned (smoothed) maps, and the largest difference relative to the reference maximum. Each image
is written to ``--out`` as soon as it is done (atomically); a rerun skips the images already there.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from caap import methods
from caap.data.real import data_dir
from caap.io import save_json
from caap.methods.mda import smooth_map

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir(ROOT)
REFERENCE = Path(os.environ.get("CAAP_REFERENCE_DIR", ROOT.parent / "shared" / "reference" / "deit_tiny_dev8"))


def agreement(raw: np.ndarray, ref_raw: np.ndarray, ref_smooth: np.ndarray, labels: np.ndarray) -> dict:
    count = np.bincount(labels.ravel())
    ours = np.bincount(labels.ravel(), raw.ravel()) / count
    theirs = np.bincount(labels.ravel(), ref_raw.ravel()) / count
    valued = (ours >= 1e-4) | (theirs >= 1e-4)
    smooth = smooth_map(torch.from_numpy(raw), (14, 14)).numpy()
    return {
        "top10_common": len(set(np.argsort(-ours)[:10]) & set(np.argsort(-theirs)[:10])),
        "valued_segments": [int((ours >= 1e-4).sum()), int((theirs >= 1e-4).sum())],
        "spearman_valued_segments": float(spearmanr(ours[valued], theirs[valued])[0]),
        "spearman_pixels": float(spearmanr(smooth.ravel(), ref_smooth.ravel())[0]),
        "max_abs_diff_over_max": float(np.abs(smooth - ref_smooth).max() / np.abs(ref_smooth).max()),
        "max": [float(smooth.max()), float(ref_smooth.max())],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="0,1,2,3,4,5,6,7")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mda_reference.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from caap.adapters import create_model

    meta = json.loads((REFERENCE / "meta.json").read_text())
    x = torch.from_numpy(np.load(REFERENCE / "inputs.npy"))
    ref_raw, ref_smooth = np.load(REFERENCE / "mda_raw.npy"), np.load(REFERENCE / "mda.npy")
    labels = np.load(REFERENCE / "mda_slic_segments.npy").astype(np.int64)
    model = create_model("deit_tiny_patch16_224", DATA / "deit_tiny_patch16_224.safetensors")
    explainer = methods.get("mda")(model, smooth=False)
    done = json.loads(args.out.read_text()) if args.out.is_file() else {
        "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads", "images": {}}
    for i in (int(s) for s in args.images.split(",")):
        if str(i) in done["images"]:
            continue
        start = time.perf_counter()
        att = explainer.explain(x[i : i + 1], target=[meta["mda_targets"][i]])
        row = {"file": meta["files"][i], "target": meta["mda_targets"][i], "seconds": time.perf_counter() - start,
               **{k: int(v[0]) for k, v in att.meta.items() if k in ("forward_passes", "insertion_prefix")},
               **agreement(att.scores[0].numpy(), ref_raw[i], ref_smooth[i], labels[i])}
        done["images"][str(i)] = row
        save_json(args.out, done)
        print(json.dumps({"image": i, **row}), flush=True)


if __name__ == "__main__":
    main()
