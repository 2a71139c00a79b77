"""The results table of a run: mean ± standard error per method × metric, as Markdown, CSV and JSON."""

from __future__ import annotations

import math

import numpy as np

from caap.bench.store import RunStore
from caap.io import atomic_write_bytes, save_json
from caap.metrics import METRICS


def summarize(store: RunStore, methods: list[str], metrics: list[str]) -> dict:
    """Mean ± standard error per method × metric (and seconds per image), written as Markdown, CSV, JSON."""
    values: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for record in store.records():
        if record["method"] not in values:
            continue
        cell = values[record["method"]]
        cell.setdefault("seconds", []).append(record["seconds"])
        for name, v in record["metrics"].items():
            cell.setdefault(name, []).append(v)
    columns = [m for m in metrics if any(m in values[k] for k in values)] + ["seconds"]
    table = {"columns": columns, "rows": {}, "n": {}}
    for method, cell in values.items():
        table["rows"][method] = {}
        for c in columns:
            v = np.asarray(cell.get(c, []), dtype=np.float64)
            se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
            table["rows"][method][c] = {"mean": float(v.mean()) if len(v) else float("nan"), "se": se, "n": len(v)}
    best = {}
    for c in columns[:-1]:
        direction = METRICS.get(c).higher_is_better
        means = {m: table["rows"][m][c]["mean"] for m in values if not math.isnan(table["rows"][m][c]["mean"])}
        if means:
            best[c] = (max if direction else min)(means, key=means.get)
    table["best"] = best
    save_json(store.root / "table.json", table)
    atomic_write_bytes(store.root / "table.md", markdown(table).encode())
    atomic_write_bytes(store.root / "table.csv", _csv(table).encode())
    return table


def cell_text(table: dict, method: str, column: str) -> str:
    """``mean ± se`` of one cell (seconds: the mean alone)."""
    v = table["rows"][method][column]
    return f"{v['mean']:.4f} ± {v['se']:.4f}" if column != "seconds" else f"{v['mean']:.2f}"


def markdown(table: dict) -> str:
    arrows = {c: ("↑" if METRICS.get(c).higher_is_better else "↓") for c in table["columns"][:-1]}
    head = ["method", *[f"{c} {arrows.get(c, '')}".strip() for c in table["columns"][:-1]], "s/img"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in table["rows"]:
        cells = []
        for c in table["columns"]:
            text = cell_text(table, method, c)
            cells.append(f"**{text}**" if table["best"].get(c) == method else text)
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines) + "\n"


def _csv(table: dict) -> str:
    rows = ["method,metric,mean,se,n"]
    for method, row in table["rows"].items():
        for c, v in row.items():
            rows.append(f"{method},{c},{v['mean']:.6g},{v['se']:.6g},{v['n']}")
    return "\n".join(rows) + "\n"
