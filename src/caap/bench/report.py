"""The run's report: curve plots, a grid of example maps and an HTML page with the table."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from caap.bench.store import RunStore
from caap.bench.table import cell_text, footer
from caap.io import atomic_write_bytes, save_figure
from caap.methods import METHODS
from caap.viz import grid_figure


def curve_plots(store: RunStore, methods: list[str]) -> list[Path]:
    """One PNG per curve metric: the mean curve of every method (x: share of patches changed)."""
    curves: dict[str, dict[str, list[list[float]]]] = {}
    xs: dict[str, list[float]] = {}
    for record in store.records():
        for metric, c in record.get("curves", {}).items():
            curves.setdefault(metric, {}).setdefault(record["method"], []).append(c["y"])
            xs[metric] = c["x"]
    written = []
    for metric, per_method in curves.items():
        fig = Figure(figsize=(5, 3.4))
        ax = fig.subplots()
        for method in methods:
            if method in per_method:
                ax.plot(xs[metric], np.mean(per_method[method], axis=0), label=method)
        ax.set_xlabel("share of patches changed")
        ax.set_ylabel("target score" if "perturbation" not in metric else "top-1 correct")
        ax.set_title(metric)
        ax.legend(fontsize=7)
        fig.tight_layout()
        slug = re.sub(r"[^A-Za-z0-9_.-]", "-", metric)
        written.append(save_figure(store.root / "plots" / f"{slug}.png", fig, dpi=100))
    return written


def example_grid(store: RunStore, dataset, methods: list[str], count: int = 4) -> Path | None:
    """Rows of example images, one overlay per method."""
    images, maps, titles, outlines, signed = [], [], [], [], []
    for i in range(min(count, len(dataset))):
        if not all(store.map_path(i, m).is_file() for m in methods):
            continue
        item = dataset[i]
        pixels = item.image - item.image.amin()
        pixels = (pixels / pixels.amax().clamp(min=1e-6)).permute(1, 2, 0).numpy()
        for m in methods:
            images.append(pixels)
            maps.append(torch.from_numpy(np.load(store.map_path(i, m))))
            titles.append(f"{item.id[:18]} {m}")
            signed.append(METHODS.get(m).signed)
            outlines.append(None if item.mask is None else item.mask.numpy())
    if not maps:
        return None
    fig = grid_figure(images, maps, titles, outlines=outlines, columns=len(methods), signed=signed)
    return save_figure(store.root / "plots" / "examples.png", fig, dpi=90)


def write_html(out: Path, table: dict, settings: dict, plots: list[Path]) -> Path:
    """``report.html``: settings, the table (best per column in bold) and the figures."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", *table["columns"]])
    rows = []
    for method in table["rows"]:
        cells = []
        for c in table["columns"]:
            text = cell_text(table, method, c)
            cells.append(f"<td><b>{text}</b></td>" if table["best"].get(c) == method else f"<td>{text}</td>")
        rows.append(f"<tr><td>{html.escape(method)}</td>{''.join(cells)}</tr>")
    figures = "".join(f'<figure><img src="{html.escape(str(p.relative_to(out)))}" alt="{html.escape(p.stem)}">'
                      f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in plots)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>caap benchmark</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}} td:first-child{{text-align:left}}
figure{{display:inline-block;margin:8px}} img{{max-width:720px}}</style></head>
<body><h1>caap benchmark</h1>
<pre>{html.escape(json.dumps(settings, indent=1))}</pre>
<table id="results"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>
<p>{html.escape(footer(table).replace("**", ""))} Best per column in bold; last column: seconds per image.</p>
{figures}
</body></html>
"""
    return atomic_write_bytes(out / "report.html", page.encode())
