"""The results table of a run: mean ± standard error per method × metric, as Markdown, CSV and JSON; and the
run's per-image scores as one compact CSV (``scores.csv``: image, id, method, metric, value; no maps), from which
every table can be recomputed without the run folder."""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from caap.bench import stats
from caap.bench.store import OUTCOMES, SCORE_COLUMNS, RunStore
from caap.errors import OptionError
from caap.io import atomic_write_bytes, save_json
from caap.metrics import METRICS


def summarize(store: RunStore, methods: list[str], metrics: list[str], num_classes: int | None = None) -> dict:
    """:func:`build` from the run's records, written as ``table.{md,csv,json}`` and ``scores.csv``."""
    run = store.scores()  # the one record of a run's scores (values by image id, outcomes)
    table = build({m: run.values.get(m, {}) for m in methods}, metrics, dict(run.outcomes), num_classes)
    save_json(store.root / "table.json", table)
    atomic_write_bytes(store.root / "table.md", markdown(table).encode())
    atomic_write_bytes(store.root / "table.csv", _csv(table).encode())
    atomic_write_bytes(store.root / "scores.csv", scores_csv(store, methods).encode())
    return table




def build(values: dict[str, dict[str, dict[int, float]]], metrics: list[str],
          outcomes: dict[int, tuple[int, int]] | None = None, num_classes: int | None = None) -> dict:
    """The table of ``{method: {metric: {image: value}}}``: per method × metric the mean, standard error, 95 %
    bootstrap interval and n; seconds per map as median and quartiles; per column the best method, bold only
    when it is better than every other method (:func:`caap.bench.stats.best`: paired bootstrap or exact McNemar
    test, Holm-corrected), else the methods it ties; the model's accuracy on the images."""
    columns = [m for m in metrics if any(m in values[k] for k in values)] + ["seconds"]
    table = {"columns": columns, "rows": {}, "best": {}, "ties": {}, "tests": {}}
    for method, per_metric in values.items():
        table["rows"][method] = {c: stats.cell(per_metric.get(c, {})) for c in columns[:-1]}
        table["rows"][method]["seconds"] = spread(per_metric.get("seconds", {}))
    for c in columns[:-1]:
        metric = METRICS.get(c)
        result = stats.best({m: values[m].get(c, {}) for m in values}, metric.higher_is_better, metric.binary)
        if result is None:
            continue
        table["tests"][c] = result
        if result["significant"]:
            table["best"][c] = result["method"]
        else:
            table["ties"][c] = [result["method"], *result["tied"]]
    table["images"] = len({i for m in values for c, v in values[m].items() if c in columns for i in v})
    table["accuracy"], table["warning"] = accuracy(outcomes or {}, num_classes)
    return table


def spread(seconds: dict[int, float]) -> dict:
    """Seconds per map as a distribution: median, quartiles, min, max, n (a mean hides the slow calls)."""
    v = np.asarray(list(seconds.values()), dtype=np.float64)
    if not len(v):
        return {"mean": float("nan"), "median": float("nan"), "p25": float("nan"), "p75": float("nan"), "n": 0}
    p25, median, p75 = np.percentile(v, [25, 50, 75])
    return {"mean": float(v.mean()), "median": float(median), "p25": float(p25), "p75": float(p75),
            "min": float(v.min()), "max": float(v.max()), "n": len(v)}


def scores_csv(store: RunStore, methods: list[str]) -> str:
    """Every per-image score of ``methods`` in the run (seconds per map as the metric ``seconds``; also the
    target, label and prediction as ``target`` / ``label`` / ``prediction``), one row each, sorted."""
    rows = []
    for record in store.records():
        if record["method"] not in methods:
            continue
        values = {**record["metrics"], "seconds": record["seconds"]}
        for key in OUTCOMES:
            if key in record:
                values[key] = record[key]
        for metric, value in values.items():
            rows.append((record["index"], record.get("id", ""), record["method"], metric, repr(float(value))))
    rows.sort(key=lambda r: (r[2], r[3], r[0]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SCORE_COLUMNS)
    writer.writerows(rows)
    return out.getvalue()


def paired_table(store: RunStore, methods: list[str], metrics: list[str], reference: str) -> str:
    """Markdown: each method's paired difference to ``reference`` per metric (mean, 95 % paired bootstrap
    interval and its p, or the exact McNemar p for a binary metric, uncorrected; n)."""
    found = store.scores().values
    values = {m: found.get(m, {}) for m in methods}
    if reference not in values:
        raise OptionError("compare", f"{reference!r} is not one of the run's methods {methods}")
    columns = [m for m in metrics if any(m in values[k] for k in values)]
    arrows = " | ".join(f"{c} {'↑' if METRICS.get(c).higher_is_better else '↓'}" for c in columns)
    lines = [f"Paired difference to {reference} (method − {reference}; 95 % paired bootstrap interval and its p, "
             "exact McNemar p for binary metrics; uncorrected for the number of methods)", "",
             f"| method | {arrows} |", "|" + "---|" * (len(columns) + 1)]
    for method in values:
        if method == reference:
            continue
        cells = []
        for c in columns:
            d = stats.paired(values[method].get(c, {}), values[reference].get(c, {}), binary=METRICS.get(c).binary)
            cells.append(f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] p={d['p']:.3g} (n={d['n']})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def accuracy(outcomes: dict[int, tuple[int, int]], num_classes: int | None) -> tuple[dict | None, str | None]:
    """The model's top-1 accuracy on the run's labelled images, and a warning when it is not clearly above
    chance: below ``1/K + 3·sqrt((1/K)(1 − 1/K)/n)``, three binomial standard errors above chance, so that a
    model that does not fit the data (whose maps explain noise) is flagged with a false-alarm rate near 0.1 %.
    With too few images for that bound to lie below 100 % (two prompts and a handful of images), no warning."""
    labelled = [(p, y) for p, y in outcomes.values() if y >= 0]
    if not labelled or not num_classes:
        return None, None
    n = len(labelled)
    value = sum(p == y for p, y in labelled) / n
    chance = 1 / num_classes
    threshold = chance + 3 * math.sqrt(chance * (1 - chance) / n)
    result = {"value": value, "n": n, "chance": chance, "threshold": threshold}
    if value >= threshold or threshold >= 1:
        return result, None
    return result, (f"the model's accuracy on these {n} images is {value:.1%}, not clearly above chance "
                    f"({chance:.1%}; threshold {threshold:.1%}): its maps explain predictions that do not fit the "
                    "data, and localisation scores may mislead")


def cell_text(table: dict, method: str, column: str) -> str:
    """``mean [95 % interval]`` of one cell, ``(tie)`` where the best does not beat it significantly
    (seconds: the median and the quartiles)."""
    v = table["rows"][method][column]
    if column == "seconds":
        return f"{v['median']:.2f} ({v['p25']:.2f}–{v['p75']:.2f})" if "median" in v else f"{v['mean']:.2f}"
    text = f"{v['mean']:.4f} [{v['low']:.4f}, {v['high']:.4f}]"
    return text + (" (tie)" if method in table.get("ties", {}).get(column, []) else "")


def markdown(table: dict) -> str:
    arrows = {c: ("↑" if METRICS.get(c).higher_is_better else "↓") for c in table["columns"][:-1]}
    head = ["method", *[f"{c} {arrows.get(c, '')}".strip() for c in table["columns"][:-1]], "s/map (quartiles)"]
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
    text = (f"n = {table.get('images', 0)} images; mean [95 % bootstrap interval]; bold: the best mean, better "
            "than every other method (paired bootstrap of the mean, exact McNemar test for binary metrics, Holm-"
            f"corrected over the other methods at {stats.ALPHA}); (tie): the best mean and the methods it is not "
            "separated from")
    if acc:
        text += f"; model accuracy on them {acc['value']:.1%} (chance {acc['chance']:.1%})"
    if table.get("warning"):
        text += f". **Warning:** {table['warning']}"
    return text + "."


def _csv(table: dict) -> str:
    rows = ["method,metric,mean,se,ci_low,ci_high,n"]  # seconds: mean, -, quartiles
    for method, row in table["rows"].items():
        for c, v in row.items():
            if c == "seconds":
                rows.append(f"{method},{c},{v['mean']:.6g},,{v['p25']:.6g},{v['p75']:.6g},{v['n']}")
            else:
                rows.append(f"{method},{c},{v['mean']:.6g},{v['se']:.6g},{v['low']:.6g},{v['high']:.6g},{v['n']}")
    return "\n".join(rows) + "\n"
