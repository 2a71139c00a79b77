"""The statistics behind every verdict and every mark in caap's tables: paired tests over images, Holm's
correction over the rivals, and one rule for every table.

**One test per comparison, giving both the verdict and the p shown.**

- Continuous metrics (AUCs, masses, ROAD): the paired bootstrap of the mean difference over images
  (``RESAMPLES`` resamples of the images, seeded, the same resampled images for every method of a table). The
  two-sided p is twice the smaller share of resampled means on either side of 0 (floored at ``1/RESAMPLES``),
  and the interval shown is the percentile interval at the level that test uses, built so that it lies clear of
  0 exactly when ``p`` is below that level (the duality is tested).
- Binary metrics (the pointing game: hit or miss per image): the exact McNemar test, i.e. the two-sided exact
  sign test on the images where the two methods disagree (``b`` images only the first hits, ``c`` only the
  second; ``p = binomtest(b, b + c, 1/2)``). Its table cell shows ``b:c`` instead of an interval.

**Holm's correction over the rivals.** A method is *better than every other* only if each of its ``m``
comparisons separates it after Holm's step-down correction at ``ALPHA`` (the ``j``-th smallest p is tested at
``ALPHA / (m - j + 1)``, and the steps stop at the first failure); the adjusted p
``max_{i <= j} min(1, (m - i + 1) p_(i))`` is what tables show, and each comparison's interval is drawn at its
step's level. A verdict (:func:`versus`) is **holds** when every comparison separates the method in its favour,
**does not hold** when some comparison separates it against, and **tie** otherwise, naming the rivals it ties.
Run tables mark the method with the best mean bold only when it holds against every other method of the column,
and mark ``(tie)`` on the methods it is not separated from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
from scipy.stats import binomtest

RESAMPLES = 10_000
ALPHA = 0.05
LEVEL = 0.95  # the interval of one method's mean (no comparison, no correction)


@lru_cache(maxsize=16)
def _resample_counts(n: int, seed: int) -> np.ndarray:
    """``[RESAMPLES, n]`` float64: how often each image is drawn in each resample (one matrix per ``n``, seeded,
    so that every table of a run resamples the same images)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, (RESAMPLES, n))
    counts = np.zeros((RESAMPLES, n))
    np.add.at(counts, (np.arange(RESAMPLES)[:, None], draws), 1.0)
    counts.setflags(write=False)
    return counts


def resampled_means(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[RESAMPLES]``: the mean of ``values`` ``[n]`` over each bootstrap resample of the images."""
    values = np.asarray(values, dtype=np.float64)
    return _resample_counts(len(values), seed) @ values / len(values)


def _lower(means: np.ndarray, share: float) -> float:
    """The smallest resampled mean ``v`` with ``share(means <= v) >= share`` (inverted-CDF percentile)."""
    return float(np.quantile(means, share, method="inverted_cdf"))


def interval(values: np.ndarray, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` ``[n]`` at ``level`` (NaN for fewer than 2)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    means = resampled_means(values, seed)
    tail = (1 - level) / 2
    return _lower(means, tail), -_lower(-means, tail)


def bootstrap_p(diff: np.ndarray, seed: int = 0) -> float:
    """Two-sided paired-bootstrap p of ``mean(diff) = 0``: twice the smaller share of resampled means on either
    side of 0, at least ``1 / RESAMPLES`` (1 for all-zero differences)."""
    diff = np.asarray(diff, dtype=np.float64)
    if len(diff) < 2 or not np.any(diff):
        return 1.0
    means = resampled_means(diff, seed)
    share = min(float(np.mean(means <= 0)), float(np.mean(means >= 0)))
    return float(min(1.0, max(2 * share, 1 / RESAMPLES)))


def sign_test(diff: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar test of paired binary outcomes: ``(p, b, c)`` with ``b`` the images where ``diff > 0`` and
    ``c`` where ``diff < 0`` (two-sided exact binomial test of ``b`` in ``b + c`` at 1/2; 1 when none differ)."""
    diff = np.asarray(diff, dtype=np.float64)
    b, c = int((diff > 0).sum()), int((diff < 0).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return p, b, c


def _common(a: Mapping[int, float], b: Mapping[int, float]) -> np.ndarray:
    return np.asarray([a[i] - b[i] for i in sorted(set(a) & set(b))], dtype=np.float64)


def paired(a: Mapping[int, float], b: Mapping[int, float], seed: int = 0, binary: bool = False,
           level: float = 1 - ALPHA) -> dict:
    """``a − b`` over the images both have: ``{"mean", "low", "high", "p", "n", "test"}`` (and ``"b"``, ``"c"``
    for a binary metric). ``level``: the interval's level (the test's own: it lies clear of 0 iff ``p < 1 −
    level``); ``p`` is uncorrected."""
    diff = _common(a, b)
    nan = float("nan")
    if len(diff) == 0:
        return {"mean": nan, "low": nan, "high": nan, "p": nan, "n": 0, "test": "none"}
    if binary:
        p, hits, misses = sign_test(diff)
        return {"mean": float(diff.mean()), "low": nan, "high": nan, "p": p, "n": len(diff), "test": "mcnemar",
                "b": hits, "c": misses}
    low, high = interval(diff, seed, level)
    return {"mean": float(diff.mean()), "low": low, "high": high, "p": bootstrap_p(diff, seed), "n": len(diff),
            "test": "bootstrap"}


def holm(pvalues: Mapping[str, float], alpha: float = ALPHA) -> dict[str, dict]:
    """Holm's step-down correction: per key ``{"p_adj", "level", "rejected"}``; ``level`` is the step's own
    ``alpha / (m - j + 1)`` (``j``: the key's rank by p), ``rejected`` whether the step-down rejects it."""
    order = sorted(pvalues, key=lambda k: (pvalues[k], k))
    m = len(order)
    out, running, stopped = {}, 0.0, False
    for j, key in enumerate(order):
        level = alpha / (m - j)
        running = max(running, min(1.0, (m - j) * pvalues[key]))
        stopped = stopped or not pvalues[key] < level
        out[key] = {"p_adj": running, "level": level, "rejected": not stopped}
    return out


def compare_all(pairs: Mapping[str, tuple[Mapping[int, float], Mapping[int, float]]], higher_is_better: bool,
                binary: bool = False, seed: int = 0) -> dict[str, dict]:
    """One family of comparisons ``{key: (ours, rival)}`` (``ours`` may differ per key: the same method on
    another canvas): each ``ours − rival`` signed so that positive favours ours, tested over the images both have
    (:func:`paired`), Holm-corrected over the family, its interval drawn at its Holm step's level. Per key:
    :func:`paired`'s fields and ``p_adj``, ``level``, ``better`` / ``worse`` (separated in ours' favour /
    against it)."""
    sign = 1.0 if higher_is_better else -1.0
    signed = {k: ({i: sign * v for i, v in ours.items()}, {i: sign * v for i, v in rival.items()})
              for k, (ours, rival) in pairs.items()}
    raw = {k: paired(a, b, seed, binary) for k, (a, b) in signed.items()}
    raw = {k: d for k, d in raw.items() if d["n"] > 0}
    corrected = holm({k: d["p"] for k, d in raw.items()})
    out = {}
    for key, d in raw.items():
        c = corrected[key]
        if not binary:  # the interval at the level its Holm step tests
            d["low"], d["high"] = interval(_common(*signed[key]), seed, 1 - c["level"])
        favours = d["b"] > d["c"] if binary else d["low"] > 0  # the side of 0 the test rejects on
        against = d["b"] < d["c"] if binary else d["high"] < 0
        out[key] = {**d, "p_adj": c["p_adj"], "level": c["level"], "better": c["rejected"] and favours,
                    "worse": c["rejected"] and against}
    return out


def verdict(comparisons: Mapping[str, dict]) -> tuple[str, list[str]]:
    """``("holds" | "does not hold" | "tie", tied keys)`` of a family (:func:`compare_all`): holds when every
    comparison separates in ours' favour, does not hold when any separates against it."""
    tied = sorted(k for k, c in comparisons.items() if not c["better"] and not c["worse"])
    if comparisons and all(c["better"] for c in comparisons.values()):
        return "holds", tied
    if any(c["worse"] for c in comparisons.values()):
        return "does not hold", tied
    return "tie", tied


def versus(ours: Mapping[int, float], rivals: Mapping[str, Mapping[int, float]], higher_is_better: bool,
           binary: bool = False, seed: int = 0) -> dict:
    """Is ``ours`` better than every rival? :func:`compare_all` of ``ours`` against each rival, and
    :func:`verdict`: ``{"verdict", "comparisons": {rival: ...}, "tied": [rivals]}``."""
    comparisons = compare_all({k: (ours, r) for k, r in rivals.items()}, higher_is_better, binary, seed)
    result, tied = verdict(comparisons)
    return {"verdict": result, "comparisons": comparisons, "tied": tied}


def cell(values: Mapping[int, float]) -> dict:
    """Mean, standard error, 95 % bootstrap interval and n of one method × metric."""
    v = np.asarray(list(values.values()), dtype=np.float64)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    low, high = interval(v)
    return {"mean": float(v.mean()) if len(v) else float("nan"), "se": se, "low": low, "high": high, "n": len(v)}


def best(per_method: Mapping[str, Mapping[int, float]], higher_is_better: bool, binary: bool = False) -> dict | None:
    """The method with the best mean in one column and whether it beats *every* other method (:func:`versus`):
    ``{"method", "significant", "tied": [methods not separated from it], "p": the largest Holm-adjusted p}``;
    None for an empty column or a column of one method."""
    means = {m: float(np.mean(list(v.values()))) for m, v in per_method.items() if v}
    if not means:
        return None
    top = sorted(means, key=lambda m: (-means[m] if higher_is_better else means[m], m))[0]
    rivals = {m: per_method[m] for m in means if m != top}
    if not rivals:  # one method: nothing to be better than, no mark
        return None
    result = versus(per_method[top], rivals, higher_is_better, binary)
    p = max((c["p_adj"] for c in result["comparisons"].values()), default=None)
    return {"method": top, "significant": result["verdict"] == "holds", "tied": result["tied"], "p": p}
