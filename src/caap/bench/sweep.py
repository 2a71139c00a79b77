"""CAAP's layer-band × context × score sweep: a benchmark run over generated method specs
``caap:layers=S:E:context=C:score=K``, scored by faithfulness (and localisation where masks exist).

The run folder is the bench's (:class:`caap.bench.store.RunStore`): every (image, setting) record is written
atomically and re-running resumes (the grid may grow; the data, model and metrics must stay). Writes
``sweep.json`` (mean per setting and metric) and one heat map per context, score and metric
(``sweep_<metric>_<context>_<score>.png``, rows: first patched block, columns: band width).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from caap.adapters import adapt
from caap.bench.options import MethodSpec, RunOptions
from caap.bench.runner import BenchConfig, load, run
from caap.errors import OptionError
from caap.io import save_figure, save_json
from caap.metrics import METRICS


@dataclass(kw_only=True)
class SweepConfig(RunOptions):
    """A sweep: the run-wide options (:class:`~caap.bench.options.RunOptions`) and the grid."""

    starts: list[int]
    widths: list[int]
    contexts: list[str]
    scores: list[str]
    metrics: list[str]


def setting_spec(start: int, width: int, context: str, score: str) -> MethodSpec:
    """The CAAP method of one sweep setting, as typed options (its label ``caap:layers=S:E:context=C:score=K``)."""
    spec = MethodSpec("caap", {"layers": list(range(start, start + width)), "context": context, "score": score},
                      f"caap:layers={start}:{start + width}:context={context}:score={score}")
    return spec


def settings(config: SweepConfig, depth: int) -> list[tuple[int, int, str, str]]:
    """The grid's settings that fit a model with ``depth`` blocks (in grid order)."""
    return [(s, w, c, sc) for s, w, c, sc in itertools.product(config.starts, config.widths, config.contexts,
                                                               config.scores) if s + w <= depth]


def sweep(config: SweepConfig, out: str | Path, progress: bool = True) -> dict:
    model, dataset = load(config, ["caap"])
    depth = adapt(model).num_blocks
    grid = settings(config, depth)
    if not grid:
        raise OptionError("starts", f"and widths: no layer band fits a model with {depth} blocks")
    specs = [setting_spec(*st) for st in grid]
    bench = BenchConfig(**config.run_options(), methods=specs, metrics=config.metrics)
    table = run(bench, out, progress=progress, report=False, loaded=(model, dataset))
    summary = {"settings": [], "metrics": config.metrics, "depth": depth}
    for st, spec in zip(grid, specs, strict=True):
        row = table["rows"][spec.label]
        means = {m: row[m]["mean"] for m in config.metrics if m in row and row[m]["n"]}
        summary["settings"].append({"start": st[0], "width": st[1], "context": st[2], "score": st[3],
                                    "images": row["seconds"]["n"], "means": means})
    save_json(Path(out) / "sweep.json", summary)
    _heatmaps(Path(out), summary, config)
    return summary


def _heatmaps(out: Path, summary: dict, config: SweepConfig) -> None:
    for metric in summary["metrics"]:
        better = "higher" if METRICS.get(metric).higher_is_better else "lower"
        for context, score in itertools.product(config.contexts, config.scores):
            grid = np.full((len(config.starts), len(config.widths)), np.nan)
            for s in summary["settings"]:
                if s["context"] == context and s["score"] == score and metric in s["means"]:
                    grid[config.starts.index(s["start"]), config.widths.index(s["width"])] = s["means"][metric]
            fig = Figure(figsize=(1.2 + 0.9 * len(config.widths), 1 + 0.6 * len(config.starts)))
            ax = fig.subplots()
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
