"""CAAP's layer-band × context × score sweep, scored by faithfulness (and localisation where masks exist).

Every (setting, image) record is written atomically; re-running resumes (the grid may grow; the data, model
and metrics must stay). Writes ``sweep.json`` (mean per
setting and metric) and one heat map per context, score and metric (``sweep_<metric>_<context>_<score>.png``,
rows: first patched block, columns: band width).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from caap.errors import CaapError
from caap.io import save_figure, save_json


@dataclass
class SweepConfig:
    model: str
    data: str
    starts: list[int]
    widths: list[int]
    contexts: list[str]
    scores: list[str]
    metrics: list[str]
    weights: str | None = None
    masks: str | None = None
    limit: int | None = None
    every: int = 1


def _key(start: int, width: int, context: str, score: str) -> str:
    return f"L{start}-{start + width}_{context.replace(':', '-')}_{score}"


def sweep(config: SweepConfig, out: str | Path, progress: bool = True) -> dict:
    from caap import CAAP
    from caap import metrics as metric_registry
    from caap.adapters import adapt
    from caap.bench.runner import BenchConfig, _load

    out = Path(out)
    _check_resume(out, config)
    model, dataset = _load(BenchConfig(config.model, config.data, [], [], config.weights, config.masks, config.limit,
                                       config.every))
    depth = adapt(model).num_blocks
    settings = [(s, w, c, sc) for s, w, c, sc in itertools.product(config.starts, config.widths, config.contexts,
                                                                    config.scores) if s + w <= depth]
    if not settings:
        raise CaapError(f"no layer band fits a model with {depth} blocks; check --starts and --widths")
    metric_objs = {m: metric_registry.build(m) for m in config.metrics}
    jobs = [(st, i) for st in settings for i in range(len(dataset))
            if not (out / "records" / f"{_key(*st)}_{i:06d}.json").is_file()]
    cache = {}
    for (start, width, context, score), i in tqdm(jobs, desc="sweep", unit="map", disable=not progress):
        item = cache.get(i) or cache.setdefault(i, dataset[i])
        x = item.image[None]
        att = CAAP(model, layers=range(start, start + width), context=context, score=score).explain(
            x, target=[item.label])
        values = {}
        for name, metric in metric_objs.items():
            if metric.needs_masks and item.mask is None:
                continue
            values[name] = float(metric(model, x, att.target, att.scores,
                                        None if item.mask is None else item.mask[None])[0])
        save_json(out / "records" / f"{_key(start, width, context, score)}_{i:06d}.json",
                  {"start": start, "width": width, "context": context, "score": score, "index": i, "metrics": values})
    summary = {"settings": [], "metrics": config.metrics, "depth": depth}
    for st in settings:
        records = [json.loads(p.read_text()) for p in sorted((out / "records").glob(f"{_key(*st)}_*.json"))]
        means = {m: float(np.mean([r["metrics"][m] for r in records if m in r["metrics"]]))
                 for m in config.metrics if any(m in r["metrics"] for r in records)}
        summary["settings"].append({"start": st[0], "width": st[1], "context": st[2], "score": st[3],
                                    "images": len(records), "means": means})
    save_json(out / "sweep.json", summary)
    _heatmaps(out, summary, config)
    return summary


def _check_resume(out: Path, config: SweepConfig) -> None:
    """Records are keyed by setting and image index: a resume may change the grid and ``limit``, not what an
    index or a record means (model, weights, data, masks, ``every``, metrics)."""
    fixed = {k: getattr(config, k) for k in ("model", "weights", "data", "masks", "every", "metrics")}
    path = out / "config.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != json.loads(json.dumps(fixed)):
            raise CaapError(f"{str(out)!r} holds a sweep with other data, model or metrics; use another folder")
    else:
        save_json(path, fixed)


def _heatmaps(out: Path, summary: dict, config: SweepConfig) -> None:
    import matplotlib.pyplot as plt

    from caap import metrics as metric_registry
    from caap.viz import close

    for metric in summary["metrics"]:
        better = "higher" if metric_registry.get(metric).higher_is_better else "lower"
        for context, score in itertools.product(config.contexts, config.scores):
            grid = np.full((len(config.starts), len(config.widths)), np.nan)
            for s in summary["settings"]:
                if s["context"] == context and s["score"] == score and metric in s["means"]:
                    grid[config.starts.index(s["start"]), config.widths.index(s["width"])] = s["means"][metric]
            fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(config.widths), 1 + 0.6 * len(config.starts)))
            im = ax.imshow(grid, cmap="viridis" if better == "higher" else "viridis_r")
            ax.set_xticks(range(len(config.widths)), [str(w) for w in config.widths])
            ax.set_yticks(range(len(config.starts)), [str(s) for s in config.starts])
            ax.set_xlabel("band width (blocks)")
            ax.set_ylabel("first patched block")
            ax.set_title(f"{metric} ({better} is better)\ncontext {context}, score {score}", fontsize=8)
            for (r, c), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    light = im.norm(v) > 0.6 if better == "higher" else im.norm(v) < 0.4  # viridis: yellow end
                    ax.text(c, r, f"{v:.3f}", ha="center", va="center", fontsize=7, color="k" if light else "w")
            fig.colorbar(im, ax=ax, fraction=0.05)
            fig.tight_layout()
            name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"sweep_{metric}_{context}_{score}")
            save_figure(out / f"{name}.png", fig, dpi=100)
            close(fig)
