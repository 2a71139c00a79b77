"""Statistics of a results table: bootstrap confidence intervals and paired tests over images.

Every interval is a 95 % percentile bootstrap over images (``RESAMPLES`` resamples, seeded, so a table is
reproducible); differences between two methods resample the *same* images for both (paired). The test
that decides whether the best value beats the runner-up is the Wilcoxon signed-rank test on the paired
per-image values (``scipy.stats.wilcoxon``, two-sided, ties in the differences handled by scipy's ``zsplit``),
at ``ALPHA``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import wilcoxon

RESAMPLES = 2000
ALPHA = 0.05


def interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of ``values`` ``[n]`` (NaN for fewer than 2)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (RESAMPLES, len(values)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired(a: dict[int, float], b: dict[int, float], seed: int = 0) -> dict:
    """``a − b`` over the images both have: mean, 95 % paired bootstrap interval, Wilcoxon p-value, n."""
    common = sorted(set(a) & set(b))
    diff = np.asarray([a[i] - b[i] for i in common], dtype=np.float64)
    if len(diff) == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "p": float("nan"), "n": 0}
    low, high = interval(diff, seed)
    if len(diff) < 2 or not np.any(diff):
        p = 1.0
    else:
        p = float(wilcoxon(diff, zero_method="zsplit").pvalue)
    return {"mean": float(diff.mean()), "low": low, "high": high, "p": p, "n": len(diff)}


def cell(values: dict[int, float]) -> dict:
    """Mean, standard error, 95 % bootstrap interval and n of one method × metric."""
    v = np.asarray(list(values.values()), dtype=np.float64)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    low, high = interval(v)
    return {"mean": float(v.mean()) if len(v) else float("nan"), "se": se, "low": low, "high": high, "n": len(v)}


def best(per_method: dict[str, dict[int, float]], higher_is_better: bool) -> dict | None:
    """The best method of one column, and whether it beats the runner-up (paired Wilcoxon at ``ALPHA``):
    ``{"method", "runner_up", "p", "significant"}``; a tie when it does not."""
    means = {m: float(np.mean(list(v.values()))) for m, v in per_method.items() if v}
    if not means:
        return None
    order = sorted(means, key=means.get, reverse=higher_is_better)
    if len(order) == 1:
        return {"method": order[0], "runner_up": None, "p": None, "significant": True}
    test = paired(per_method[order[0]], per_method[order[1]])
    return {"method": order[0], "runner_up": order[1], "p": test["p"], "significant": test["p"] < ALPHA}
