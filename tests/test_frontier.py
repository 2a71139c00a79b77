"""The cost–quality frontier (caap.bench.frontier): the Pareto front and the best method at each budget on
hand-made per-image values whose answers are known."""

from __future__ import annotations

import numpy as np

from caap.bench.frontier import budget_table, frontier


def values() -> dict:
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(40)]
    shared = rng.normal(0, 0.02, 40)

    def method(deletion: float, seconds: float, noise: float = 0.002):
        own = rng.normal(0, noise, 40)
        own -= own.mean()  # the mean exactly as given
        return {"deletion": {i: deletion + shared[k] + own[k] for k, i in enumerate(ids)},
                "seconds": {i: seconds * (1 + 0.1 * (k % 3)) for k, i in enumerate(ids)}}

    return {"cheap": method(0.30, 0.05), "mid": method(0.20, 0.5), "dear": method(0.10, 20.0),
            "dominated": method(0.35, 5.0), "noisy": method(0.21, 0.6, noise=0.3)}


def test_the_front_holds_the_methods_no_other_beats_at_no_more_cost():
    points = {p.method: p for p in frontier(values(), "deletion")}  # deletion: lower is better
    assert [p.method for p in frontier(values(), "deletion")] == ["cheap", "mid", "noisy", "dominated", "dear"]
    assert {m for m, p in points.items() if p.on_front} == {"cheap", "mid", "dear"}
    assert points["mid"].seconds[0] <= points["mid"].seconds[1] <= points["mid"].seconds[2]
    low, mean, high = points["dear"].score
    assert low < mean < high and abs(mean - 0.10) < 0.02


def test_the_budget_table_names_the_best_affordable_method_and_its_ties():
    table = budget_table(values(), ["deletion"], budgets=(0.1, 1.0, 100.0)).splitlines()[2]
    cells = [c.strip() for c in table.strip("|").split("|")]
    assert cells[2].startswith("**cheap**")  # alone under 0.1 s: the best, trivially
    assert cells[3].startswith("mid") and "(tie: noisy)" in cells[3]  # noisy's scatter keeps it unseparated
    assert cells[4].startswith("**dear**")  # far enough ahead of everything, noisy included
