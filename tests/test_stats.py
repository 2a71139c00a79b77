"""The rule behind every verdict and table mark (caap.bench.stats, issue 22): one test per comparison whose
interval and p agree, Holm's correction over the rivals, "better than every other method" — on hand-made
per-image values whose answers are known, including the counter-examples that the old rule got wrong."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from caap.bench import stats


def values(*columns: np.ndarray) -> list[dict[int, float]]:
    return [{i: float(v) for i, v in enumerate(c)} for c in columns]


@pytest.mark.parametrize("shift", [0.0, 0.004, 0.01, 0.02, -0.015])
@pytest.mark.parametrize("level", [0.95, 1 - 0.05 / 7])
def test_the_interval_is_clear_of_zero_exactly_when_p_is_below_its_level(shift, level):
    diff = np.random.default_rng(7).normal(shift, 0.05, 60)
    low, high = stats.interval(diff, level=level)
    p = stats.bootstrap_p(diff)
    assert (low > 0 or high < 0) == (p < 1 - level)
    assert low <= diff.mean() <= high


def test_all_zero_differences_are_never_separated():
    assert stats.bootstrap_p(np.zeros(30)) == 1.0
    assert stats.paired(*values(np.ones(30), np.ones(30)))["p"] == 1.0


def test_holm_steps_down_and_stops_at_the_first_failure():
    out = stats.holm({"a": 0.001, "b": 0.02, "c": 0.03, "d": 0.04})
    assert [out[k]["level"] for k in "abcd"] == pytest.approx([0.05 / 4, 0.05 / 3, 0.05 / 2, 0.05])
    assert [out[k]["p_adj"] for k in "abcd"] == pytest.approx([0.004, 0.06, 0.06, 0.06])
    assert [out[k]["rejected"] for k in "abcd"] == [True, False, False, False]  # c, d are not tested past b
    out = stats.holm({"a": 0.001, "b": 0.01, "c": 0.02})
    assert all(v["rejected"] for v in out.values())


def test_holds_only_against_every_rival_the_audits_counter_example():
    """demo-simple-slow's segmentation AP: the old rule compared CAAP with the best other method by mean (GAE,
    clearly beaten) and said "holds", while against MDA the interval crosses 0. Now: a tie, naming MDA."""
    rng = np.random.default_rng(1)
    n = 40
    base = rng.normal(0.5, 0.1, n)
    caap = base + 0.04 + rng.normal(0, 0.005, n)
    gae = base + rng.normal(0, 0.005, n)
    mda = caap - 0.041 + 0.2 * (-1.0) ** np.arange(n)  # lower mean than GAE, but noisy against CAAP
    c, g, m = values(caap, gae, mda)
    assert np.mean(mda) < np.mean(gae) < np.mean(caap)
    result = stats.versus(c, {"gae": g, "mda": m}, higher_is_better=True)
    assert result["verdict"] == "tie" and result["tied"] == ["mda"]
    assert result["comparisons"]["gae"]["better"] and not result["comparisons"]["mda"]["better"]
    alone = stats.versus(c, {"gae": g}, higher_is_better=True)
    assert alone["verdict"] == "holds"


def test_the_correction_over_rivals_turns_a_marginal_loss_into_a_tie():
    """One comparison at p ~ 0.03 among ten rivals (ROAD's p = 0.048 row): "does not hold" without correction,
    a tie with Holm's."""
    rng = np.random.default_rng(3)
    n = 50
    noise = rng.normal(0, 0.05, n)
    noise -= noise.mean()
    caap = rng.normal(0.5, 0.1, n)
    rival = caap + 0.016 + noise  # rival better by a hair (higher is better)
    c, r = values(caap, rival)
    single = stats.versus(c, {"r": r}, higher_is_better=True)
    assert single["verdict"] == "does not hold" and 0.01 < single["comparisons"]["r"]["p"] < 0.05
    flip = (-1.0) ** np.arange(n)
    clear = {f"other{k}": values(caap + 0.3 * flip * (-1) ** k)[0] for k in range(9)}  # not separated
    many = stats.versus(c, {"r": r, **clear}, higher_is_better=True)
    assert many["verdict"] == "tie" and "r" in many["tied"] and not many["comparisons"]["r"]["worse"]
    assert many["comparisons"]["r"]["p_adj"] == pytest.approx(min(1, 10 * single["comparisons"]["r"]["p"]))


def test_lower_is_better_and_the_sign_favours_ours():
    caap, gae = values(np.full(20, 0.1) + np.linspace(0, 0.01, 20), np.full(20, 0.3))
    result = stats.versus(caap, {"gae": gae}, higher_is_better=False)
    d = result["comparisons"]["gae"]
    assert result["verdict"] == "holds" and d["mean"] == pytest.approx(0.3 - np.mean(list(caap.values())))
    assert d["low"] > 0


def test_binary_metrics_use_the_exact_mcnemar_test():
    """The grid pointing game: 6 images only the rival hits, 1 only CAAP, 101 both (the audit's case): the exact
    test gives 0.125, a tie; Wilcoxon with zsplit gave 0.37. 10 to 0 separates them."""
    caap = np.ones(108)
    rival = np.ones(108)
    caap[:6] = 0
    rival[6] = 0
    c, r = values(caap, rival)
    result = stats.versus(c, {"gradcam": r}, higher_is_better=True, binary=True)
    d = result["comparisons"]["gradcam"]
    assert (d["b"], d["c"], d["test"]) == (1, 6, "mcnemar")
    assert d["p"] == pytest.approx(binomtest(1, 7, 0.5).pvalue) == pytest.approx(0.125)
    assert result["verdict"] == "tie"
    rival[:10] = 1
    caap[:10] = 0
    rival[6] = 1
    c, r = values(caap, rival)
    result = stats.versus(c, {"gradcam": r}, higher_is_better=True, binary=True)
    assert result["verdict"] == "does not hold" and result["comparisons"]["gradcam"]["p"] == pytest.approx(2 / 2**10)


def test_the_best_of_a_column_is_bold_only_when_it_beats_every_other():
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.1, 40)
    per = dict(zip("abc", values(base - 0.05, base, base + rng.normal(0, 0.001, 40)), strict=True))
    best = stats.best(per, higher_is_better=False)  # a is lowest, clearly
    assert best["method"] == "a" and best["significant"] and best["tied"] == []
    per["d"] = values(base - 0.049 + rng.normal(0, 0.05, 40))[0]  # close to a, noisy
    best = stats.best(per, higher_is_better=False)
    assert not best["significant"] and best["method"] in ("a", "d") and set(best["tied"]) & {"a", "d"}
