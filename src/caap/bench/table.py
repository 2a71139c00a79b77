"""The results table of a run: mean ± standard error per method × metric, as Markdown, CSV and JSON."""

from __future__ import annotations

import math

from caap.bench import stats
from caap.bench.store import RunStore
from caap.errors import CaapError
from caap.io import atomic_write_bytes, save_json
from caap.metrics import METRICS


def summarize(store: RunStore, methods: list[str], metrics: list[str], num_classes: int | None = None) -> dict:
    """Per method × metric: mean, standard error, 95 % bootstrap interval and n (and seconds per image); per
    column the best method and whether a paired test separates it from the runner-up (else a tie); the
    model's accuracy on the run's images. Written as Markdown, CSV and JSON."""
    outcomes: dict[int, tuple[int, int]] = {}  # image index -> (prediction, label)
    values = per_image(store, methods, outcomes)
    columns = [m for m in metrics if any(m in values[k] for k in values)] + ["seconds"]
    table = {"columns": columns, "rows": {}, "best": {}, "ties": {}, "tests": {}}
    for method, per_metric in values.items():
        table["rows"][method] = {c: stats.cell(per_metric.get(c, {})) for c in columns}
    for c in columns[:-1]:
        result = stats.best({m: values[m].get(c, {}) for m in values}, METRICS.get(c).higher_is_better)
        if result is None:
            continue
        table["tests"][c] = result
        if result["significant"]:
            table["best"][c] = result["method"]
        else:
            table["ties"][c] = [result["method"], result["runner_up"]]
    table["images"] = len({i for per_metric in values.values() for v in per_metric.values() for i in v})
    table["accuracy"], table["warning"] = accuracy(outcomes, num_classes)
    save_json(store.root / "table.json", table)
    atomic_write_bytes(store.root / "table.md", markdown(table).encode())
    atomic_write_bytes(store.root / "table.csv", _csv(table).encode())
    return table


def per_image(store: RunStore, methods: list[str],
              outcomes: dict[int, tuple[int, int]] | None = None) -> dict[str, dict[str, dict[int, float]]]:
    """``{method: {metric: {image index: value}}}`` (``"seconds"`` among the metrics), in one read of the
    records; ``outcomes``, when given, receives ``{image index: (prediction, label)}``."""
    values: dict[str, dict[str, dict[int, float]]] = {m: {} for m in methods}
    for record in store.records():
        if record["method"] not in values:
            continue
        if outcomes is not None and "prediction" in record:
            outcomes[record["index"]] = (record["prediction"], record["label"])
        cell = values[record["method"]]
        cell.setdefault("seconds", {})[record["index"]] = record["seconds"]
        for name, v in record["metrics"].items():
            cell.setdefault(name, {})[record["index"]] = v
    return values


def compare(store: RunStore, methods: list[str], metrics: list[str], reference: str) -> str:
    """Markdown: each method's paired difference to ``reference`` per metric (mean, 95 % paired bootstrap
    interval, Wilcoxon p-value, n)."""
    values = per_image(store, methods)
    if reference not in values:
        raise CaapError(f"--compare {reference!r} is not one of the run's methods {methods}")
    columns = [m for m in metrics if any(m in values[k] for k in values)]
    lines = [f"Paired difference to {reference} (method − {reference}; 95 % paired bootstrap interval; "
             "Wilcoxon signed-rank p)", "", "| method | " + " | ".join(
                 f"{c} {'↑' if METRICS.get(c).higher_is_better else '↓'}" for c in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for method in values:
        if method == reference:
            continue
        cells = []
        for c in columns:
            d = stats.paired(values[method].get(c, {}), values[reference].get(c, {}))
            cells.append(f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] p={d['p']:.3g} (n={d['n']})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
    """``mean [95 % interval]`` of one cell, ``(tie)`` where the best does not beat it significantly
    (seconds: the mean alone)."""
    v = table["rows"][method][column]
    if column == "seconds":
        return f"{v['mean']:.2f}"
    text = f"{v['mean']:.4f} [{v['low']:.4f}, {v['high']:.4f}]"
    return text + (" (tie)" if method in table.get("ties", {}).get(column, []) else "")


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
    text = (f"n = {table.get('images', 0)} images; mean [95 % bootstrap interval]; bold: best, beating the "
            f"runner-up in a paired Wilcoxon signed-rank test (p < {stats.ALPHA}); (tie): best and runner-up not "
            "separated")
    if acc:
        text += f"; model accuracy on them {acc['value']:.1%} (chance {acc['chance']:.1%})"
    if table.get("warning"):
        text += f". **Warning:** {table['warning']}"
    return text + "."


def _csv(table: dict) -> str:
    rows = ["method,metric,mean,se,ci_low,ci_high,n"]
    for method, row in table["rows"].items():
        for c, v in row.items():
            rows.append(f"{method},{c},{v['mean']:.6g},{v['se']:.6g},{v['low']:.6g},{v['high']:.6g},{v['n']}")
    return "\n".join(rows) + "\n"
