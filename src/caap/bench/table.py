"""The results table of a run: mean ± standard error per method × metric, as Markdown, CSV and JSON."""

from __future__ import annotations

import math

import numpy as np

from caap.bench.store import RunStore
from caap.io import atomic_write_bytes, save_json
from caap.metrics import METRICS


def summarize(store: RunStore, methods: list[str], metrics: list[str], num_classes: int | None = None) -> dict:
    """Mean ± standard error per method × metric (and seconds per image), and the model's accuracy on the
    run's images, written as Markdown, CSV, JSON."""
    values: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    outcomes: dict[int, tuple[int, int]] = {}  # image index -> (prediction, label)
    for record in store.records():
        if record["method"] not in values:
            continue
        if "prediction" in record:
            outcomes[record["index"]] = (record["prediction"], record["label"])
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
    table["images"] = len({r["index"] for r in store.records() if r["method"] in values})
    table["accuracy"], table["warning"] = accuracy(outcomes, num_classes)
    save_json(store.root / "table.json", table)
    atomic_write_bytes(store.root / "table.md", markdown(table).encode())
    atomic_write_bytes(store.root / "table.csv", _csv(table).encode())
    return table


def accuracy(outcomes: dict[int, tuple[int, int]], num_classes: int | None) -> tuple[dict | None, str | None]:
    """The model's top-1 accuracy on the run's labelled images, and a warning when it is not clearly above
    chance: below ``1/K + 3·sqrt((1/K)(1 − 1/K)/n)``, three binomial standard errors above chance, so that a
    model that does not fit the data (whose maps explain noise) is flagged with a false-alarm rate near 0.1 %."""
    labelled = [(p, y) for p, y in outcomes.values() if y >= 0]
    if not labelled or not num_classes:
        return None, None
    n = len(labelled)
    value = sum(p == y for p, y in labelled) / n
    chance = 1 / num_classes
    threshold = chance + 3 * math.sqrt(chance * (1 - chance) / n)
    result = {"value": value, "n": n, "chance": chance, "threshold": threshold}
    if value >= threshold:
        return result, None
    return result, (f"the model's accuracy on these {n} images is {value:.1%}, not clearly above chance "
                    f"({chance:.1%}; threshold {threshold:.1%}): its maps explain predictions that do not fit the "
                    "data, and localisation scores may mislead")


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
    lines += ["", footer(table)]
    return "\n".join(lines) + "\n"


def footer(table: dict) -> str:
    """n, the model's accuracy and any warning, in one paragraph."""
    acc = table.get("accuracy")
    text = f"n = {table.get('images', 0)} images; mean ± standard error"
    if acc:
        text += f"; model accuracy on them {acc['value']:.1%} (chance {acc['chance']:.1%})"
    if table.get("warning"):
        text += f". **Warning:** {table['warning']}"
    return text + "."


def _csv(table: dict) -> str:
    rows = ["method,metric,mean,se,n"]
    for method, row in table["rows"].items():
        for c, v in row.items():
            rows.append(f"{method},{c},{v['mean']:.6g},{v['se']:.6g},{v['n']}")
    return "\n".join(rows) + "\n"
