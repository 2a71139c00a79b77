"""How closely CAAP's fast mode reproduces exact CAAP on the real DeiT-Tiny and the ImageNet dev images.

    python benchmarks/fast_agreement.py --out runs/fast_agreement [--direction denoise|noise|both] [--every K]
        [--limit N] [--layers 4:8] [--sizes 1,2,4] [--refiners]

A run folder of :class:`caap.bench.store.RunStore`: per image (target: its label, as in ``caap bench``) and per
map — exact and fast CAAP for patch groups of each size in ``--sizes`` (``exact_1``, ``fast_1``, ``exact_2``…),
with ``--refiners`` also coarse-to-fine (exact 2x2 superpatches, then the top 8 %) and fast-then-exact
(``caap_adaptive``) — the map, its seconds (one image per call) and its deletion and insertion AUC (patch grid,
step 14); the fast maps' records add the Spearman rank correlation with the exact map of the same groups (one
value per group) and, for single patches, the overlap of their top 10 % patches. A killed run resumes; a resume
with other settings or other code is refused. ``summary.json`` / ``summary.md`` are computed from the records
(:mod:`caap.bench.stats`: means with 95 % bootstrap intervals, minima, seconds as quartiles).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from caap import CAAP, CoarseToFine, Exact, Fast, FastThenExact
from caap.bench import provenance, stats
from caap.bench.options import RunOptions
from caap.bench.runner import load
from caap.bench.store import RunStore
from caap.bench.table import spread
from caap.core.groups import superpatch_groups
from caap.data.real import data_dir
from caap.io import atomic_write_bytes, save_json, save_npy
from caap.metrics import build
from caap.metrics.sanity import top_overlap

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir(ROOT)
METRICS = {"deletion": "deletion:step=14", "insertion": "insertion:step=14"}


def group_values(scores: torch.Tensor, groups: torch.Tensor) -> np.ndarray:
    """One value per group of a map ``[gh, gw]`` (every patch of a group carries the group's score)."""
    flat, ids = scores.flatten(), groups.flatten()
    first = torch.stack([(ids == g).nonzero()[0, 0] for g in torch.unique(ids)])
    return flat[first].numpy()


def explainers(model, layers: str, direction: str, refiners: bool) -> dict[str, CAAP]:
    out = {"exact": CAAP(model, layers=layers, strategy=Exact(direction)),
           "fast": CAAP(model, layers=layers, strategy=Fast(direction))}
    if refiners:
        out["coarse_to_fine"] = CAAP(model, layers=layers, strategy=CoarseToFine(Exact(direction), 0.08))
        out["fast_then_exact"] = CAAP(model, layers=layers, strategy=FastThenExact(Fast(direction), Exact(direction)))
    return out


def image_records(store: RunStore, i: int, item, explaining: dict[str, CAAP], sizes: list[int], model) -> None:
    """Every map of image ``i`` not yet in the store, each written as soon as it exists (map, then record)."""
    x, target, grid = item.image[None], torch.tensor([item.label]), None
    maps = {}
    names = [f"{m}_{s}" for s in sizes for m in ("exact", "fast")] + [n for n in explaining if n not in
                                                                       ("exact", "fast")]
    for name in names:
        if store.done(i, name):
            maps[name] = torch.from_numpy(store.load_map(i, name))
            continue
        kind, _, size = name.rpartition("_") if name[-1].isdigit() else (name, "", "")
        explainer = explaining[kind]
        grid = grid or explainer.adapter.grid(tuple(x.shape[-2:]))
        groups = superpatch_groups(grid, int(size)) if size and int(size) > 1 else None
        start = time.perf_counter()
        att = explainer.explain(x, target=target, groups=groups, progress=False)
        seconds = time.perf_counter() - start
        maps[name] = att.scores[0]
        values = {k: float(build(spec)(model, x, target, att.scores)[0]) for k, spec in METRICS.items()}
        if kind == "fast":
            exact = maps[f"exact_{size}"]
            g = groups if groups is not None else torch.arange(grid[0] * grid[1]).view(grid)
            values["spearman"] = float(spearmanr(group_values(exact, g), group_values(att.scores[0], g))[0])
            if int(size) == 1:
                values["top10_overlap"] = top_overlap(exact, att.scores[0])
        elif kind in ("coarse_to_fine", "fast_then_exact"):
            values["spearman"] = float(spearmanr(maps["exact_1"].flatten(), att.scores[0].flatten())[0])
        save_npy(store.map_path(i, name), att.scores[0].numpy())
        save_json(store.record_path(i, name), {"index": i, "id": item.id, "method": name, "label": item.label,
                                               "seconds": seconds, "metrics": values})


def summarize(store: RunStore, names: list[str], settings: dict) -> dict:
    records = store.by_method(names)
    summary: dict = {"settings": settings, "maps": {}}
    for name in names:
        rows = records[name]
        if not rows:
            continue
        keys = sorted({k for r in rows.values() for k in r["metrics"]})
        seconds = spread({i: r["seconds"] for i, r in rows.items()})
        summary["maps"][name] = {"images": len(rows), "seconds": seconds}
        for key in keys:
            v = {i: r["metrics"][key] for i, r in rows.items() if key in r["metrics"]}
            summary["maps"][name][key] = {**stats.cell(v), "min": float(min(v.values()))}
    save_json(store.root / "summary.json", summary)
    lines = [f"# Fast vs exact CAAP ({settings['direction']}): {settings['model']}, layers {settings['layers']}", "",
             "| map | images | Spearman with exact [95 % CI] (min) | top-10 % overlap | deletion ↓ | insertion ↑ | "
             "s/image median (quartiles) |", "|---|---|---|---|---|---|---|"]
    for name, row in summary["maps"].items():
        def show(key: str, row=row) -> str:
            v = row.get(key)
            return "—" if v is None else f"{v['mean']:.4f} [{v['low']:.4f}, {v['high']:.4f}] (min {v['min']:.3f})"
        sec = row["seconds"]
        lines.append(f"| {name} | {row['images']} | {show('spearman')} | {show('top10_overlap')} | "
                     f"{row['deletion']['mean']:.4f} | {row['insertion']['mean']:.4f} | "
                     f"{sec['median']:.3f} ({sec['p25']:.3f}–{sec['p75']:.3f}) |")
    atomic_write_bytes(store.root / "summary.md", ("\n".join(lines) + "\n").encode())
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--direction", default="denoise", choices=["denoise", "noise", "both"])
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--layers", default="4:8")
    parser.add_argument("--sizes", default="1,2,4")
    parser.add_argument("--refiners", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--allow-code-change", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = RunOptions(model="deit_tiny_patch16_224", weights=str(DATA / "deit_tiny_patch16_224.safetensors"),
                         data=str(DATA / "imagenet-dev"), every=args.every, limit=args.limit, target="label")
    model, data = load(options, ["caap"])
    sizes = [int(s) for s in args.sizes.split(",")]
    explaining = explainers(model, args.layers, args.direction, args.refiners)
    settings = {"model": "deit_tiny_patch16_224 (real)", "layers": args.layers, "direction": args.direction,
                "every": args.every, "limit": args.limit, "sizes": sizes, "refiners": args.refiners,
                "threads": args.threads}
    store = RunStore(args.out)
    now = provenance.record("cpu")
    history = provenance.check_resume((store.stored() or {}).get("info"), now, args.allow_code_change)
    store.open(settings, info={**now, "code_history": history})
    for i in tqdm(range(len(data)), desc="images"):
        image_records(store, i, data[i], explaining, sizes, model)
    names = [f"{m}_{s}" for s in sizes for m in ("exact", "fast")] + [n for n in explaining if n not in
                                                                       ("exact", "fast")]
    summarize(store, names, settings)
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
