"""The cost–quality frontier of a set of methods on the same images: per faithfulness metric and canvas, each
method's seconds per map (median and quartiles, as measured inside its run) against its mean score (with a 95 %
bootstrap interval), the Pareto front (no other method both cheaper by median and better by mean), and the best
method at each budget — the method with the best mean among those whose median cost fits, marked ``(tie)`` with
the affordable methods it is not separated from (paired test, Holm over them: caap.bench.stats.best).

    points = frontier(values, "deletion:step=14")              # values: {method: {spec: {image id: value}}}
    budget_table(values, ["deletion:step=14", ...])            # Markdown
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from caap.bench import stats
from caap.bench.verdict import canvas_of
from caap.metrics import METRICS

BUDGETS = (0.1, 1.0, 10.0, 100.0)  # seconds per map


@dataclass(frozen=True)
class Point:
    """One method on one metric: cost (seconds per map: 25th, 50th, 75th percentile) and quality (mean score and
    its 95 % interval), and whether it is on the Pareto front."""

    method: str
    seconds: tuple[float, float, float]
    score: tuple[float, float, float]
    on_front: bool


def frontier(values: Mapping[str, Mapping[str, Mapping[str, float]]], spec: str) -> list[Point]:
    """The points of every method with scores for ``spec`` and seconds, cheapest first."""
    higher = METRICS.get(spec).higher_is_better
    raw = []
    for method, per in values.items():
        scores, seconds = per.get(spec), per.get("seconds")
        if not scores or not seconds:
            continue
        cell = stats.cell(scores)
        p25, p50, p75 = (float(v) for v in np.percentile(list(seconds.values()), [25, 50, 75]))
        raw.append((method, (p25, p50, p75), (cell["low"], cell["mean"], cell["high"])))
    sign = 1.0 if higher else -1.0
    out = []
    for method, sec, score in sorted(raw, key=lambda r: (r[1][1], r[0])):
        dominated = any(o[1][1] <= sec[1] and sign * o[2][1] > sign * score[1] for o in raw if o[0] != method)
        out.append(Point(method, sec, score, not dominated))
    return out


def budget_table(values: Mapping[str, Mapping[str, Mapping[str, float]]], specs: Sequence[str],
                 budgets: Sequence[float] = BUDGETS) -> str:
    """Markdown: per metric and canvas (rows) and budget (columns), the best affordable method by mean, with the
    affordable methods it is not separated from."""
    head = " | ".join(f"≤ {b:g} s" for b in budgets)
    lines = [f"| metric | canvas | {head} |", "|" + "---|" * (len(budgets) + 2)]
    for spec in specs:
        metric = METRICS.get(spec)
        points = {p.method: p for p in frontier(values, spec)}
        cells = []
        for budget in budgets:
            affordable = {m: values[m][spec] for m, p in points.items() if p.seconds[1] <= budget}
            if len(affordable) == 1:  # alone within the budget: the best, trivially
                best = {"method": next(iter(affordable)), "significant": True, "tied": []}
            else:
                best = stats.best(affordable, metric.higher_is_better, metric.binary) if affordable else None
            if best is None:
                cells.append("—")
                continue
            mean = points[best["method"]].score[1]
            ties = f" (tie: {', '.join(best['tied'])})" if best["tied"] else ""
            cells.append(f"{'**' if best['significant'] else ''}{best['method']}{'**' if best['significant'] else ''}"
                         f" {mean:.3f}{ties}")
        key, canvas = canvas_of(spec)
        lines.append(f"| {key.split(':')[0]} | {canvas or '—'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def points_table(values: Mapping[str, Mapping[str, Mapping[str, float]]], spec: str) -> str:
    """Markdown: the points of one metric and canvas, cheapest first, the Pareto front in bold."""
    lines = ["| method | s / map, median (quartiles) | mean [95 % CI] | on the front |", "|---|---|---|---|"]
    for p in frontier(values, spec):
        mark = "**" if p.on_front else ""
        lines.append(f"| {mark}{p.method}{mark} | {p.seconds[1]:.2f} ({p.seconds[0]:.2f}–{p.seconds[2]:.2f}) | "
                     f"{p.score[1]:.3f} [{p.score[0]:.3f}, {p.score[2]:.3f}] | {'yes' if p.on_front else ''} |")
    return "\n".join(lines) + "\n"
