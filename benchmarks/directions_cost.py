"""What CAAP's directions cost on the real DeiT-Tiny: exact and fast denoising, noising and both, and GAE, per image.

    python benchmarks/directions_cost.py --out runs/directions_cost [--bands 4:8,6:10] [--context mean]
        [--every 10] [--offset 1] [--threads 1]

Per dev image (target: its label) and per band, every map is timed with one image per call, the maps of one image
interleaved (so a slow spell of the machine hits all of them), after one warm-up call per explainer. Seconds per
image are reported as medians with quartiles, and the ratios the issue asks about — ``both`` over ``denoise`` (exact
and fast), exact over fast noising, fast noising and fast ``both`` over GAE — as the median and quartiles of the
per-image ratios (paired: the same image, measured side by side). ``records.json`` holds every image's seconds and
is rewritten atomically after each image; a killed run resumes from it (refused with other settings).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from caap import CAAP, Exact, Fast
from caap.bench import provenance
from caap.bench.options import RunOptions
from caap.bench.runner import load
from caap.bench.table import spread
from caap.data.real import data_dir
from caap.io import atomic_write_bytes, save_json
from caap.methods import get

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir(ROOT)
DIRECTIONS = ("denoise", "noise", "both")
RATIOS = (("both / denoise, exact", "exact both", "exact denoise"),
          ("both / denoise, fast", "fast both", "fast denoise"),
          ("exact / fast, noise", "exact noise", "fast noise"),
          ("exact / fast, both", "exact both", "fast both"),
          ("fast noise / GAE", "fast noise", "gae"),
          ("fast both / GAE", "fast both", "gae"))


def calls(model, band: str, context: str) -> dict[str, object]:
    """``{name: explainer}``: exact and fast maps of every direction in ``band``, and GAE."""
    out = {}
    for kind, strategy in (("exact", Exact), ("fast", Fast)):
        for d in DIRECTIONS:
            out[f"{kind} {d}"] = CAAP(model, layers=band, context=context, strategy=strategy(d))
    out["gae"] = get("gae")(model)
    return out


def summarize(records: dict, bands: list[str]) -> tuple[dict, str]:
    summary, lines = {}, []
    for band in bands:
        rows = [r[band] for r in records.values() if band in r]
        if not rows:
            continue
        seconds = {name: spread(dict(enumerate(r[name] for r in rows))) for name in rows[0]}
        ratios = {label: spread(dict(enumerate(r[a] / r[b] for r in rows))) for label, a, b in RATIOS}
        summary[band] = {"seconds": seconds, "ratios": ratios}
        lines += [f"### Band {band} ({len(rows)} images, one image per call)", "",
                  "| map | s / image, median (quartiles) |", "|---|---|"]
        lines += [f"| {n} | {s['median']:.3f} ({s['p25']:.3f}–{s['p75']:.3f}) |" for n, s in seconds.items()]
        lines += ["", "| paired ratio | median (quartiles) |", "|---|---|"]
        lines += [f"| {n} | {s['median']:.2f} ({s['p25']:.2f}–{s['p75']:.2f}) |" for n, s in ratios.items()]
        lines.append("")
    return summary, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bands", default="4:8")
    parser.add_argument("--context", default="mean")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--offset", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bands = args.bands.split(",")
    settings = {"bands": bands, "context": args.context, "every": args.every, "offset": args.offset,
                "threads": args.threads, "model": "deit_tiny_patch16_224 (real)", "target": "label"}
    options = RunOptions(model="deit_tiny_patch16_224", weights=str(DATA / "deit_tiny_patch16_224.safetensors"),
                         data=str(DATA / "imagenet-dev"), every=args.every, offset=args.offset, target="label")
    model, data = load(options, ["caap"])
    path = args.out / "records.json"
    stored = json.loads(path.read_text()) if path.is_file() else None
    if stored is not None and stored["settings"] != settings:
        raise SystemExit(f"{path} was made with other settings {stored['settings']}; expected {settings}")
    records = stored["images"] if stored else {}
    info = stored["info"] if stored else provenance.record("cpu")
    explainers = {band: calls(model, band, args.context) for band in bands}
    warm = data[0]
    for band in bands:
        for explainer in explainers[band].values():  # warm-up, not timed
            explainer.explain(warm.image[None], target=torch.tensor([warm.label]), progress=False)
    for i in tqdm(range(len(data)), desc="images"):
        if str(i) in records:
            continue
        item = data[i]
        x, target = item.image[None], torch.tensor([item.label])
        row = {}
        for band in bands:
            row[band] = {}
            for name, explainer in explainers[band].items():
                start = time.perf_counter()
                explainer.explain(x, target=target, progress=False)
                row[band][name] = time.perf_counter() - start
        records[str(i)] = {"id": item.id, **row}
        save_json(path, {"settings": settings, "info": info, "images": records})
    summary, text = summarize(records, bands)
    save_json(args.out / "summary.json", {"settings": settings, "info": info, "summary": summary})
    atomic_write_bytes(args.out / "summary.md", (text + "\n").encode())
    print(text)


if __name__ == "__main__":
    main()
