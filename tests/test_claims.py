"""benchmarks/claims.py's verdicts and benchmarks/variants.py's choose-on-one-half rule, on hand-made per-image
values whose answers are known."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their sibling devset.py
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


claims = load("claims")
variants = load("variants")


def run(**means: float) -> dict:
    """``{method: {metric: {image: value}}}``: 40 images, each method's mean exactly as given; a per-image term
    shared by all methods, and CAAP's own zero-mean scatter (std 0.01) so that paired differences vary."""
    rng = np.random.default_rng(0)
    shared, own = rng.normal(0, 0.05, 40), rng.normal(0, 0.01, 40)
    own -= own.mean()
    return {m: {"deletion:step=14": {i: mu + shared[i] + (own[i] if m == "caap" else 0.0) for i in range(40)}}
            for m, mu in means.items()}


@pytest.mark.parametrize(("means", "rank", "other", "verdict"), [
    ({"caap": 0.10, "caap_fast": 0.05, "gae": 0.20, "rollout": 0.30}, 2, "gae", "holds"),  # own mode not "other"
    ({"caap": 0.30, "gae": 0.20, "rollout": 0.25}, 3, "gae", "does not hold"),
    ({"caap": 0.2000, "gae": 0.2005}, 1, "gae", "tie"),
])
def test_a_claim_row_ranks_caap_against_the_best_other_method(means, rank, other, verdict):
    row = claims.claim_row(run(**means), "deletion:step=14")  # lower is better
    assert (row["rank"], row["best_other"], row["verdict"]) == (rank, other, verdict)
    assert row["n"] == 40 and not row["higher_is_better"]
    assert row["diff"] == pytest.approx(means[other] - means["caap"], abs=1e-9)  # positive favours CAAP
    assert row["low"] <= row["diff"] <= row["high"]


def test_a_run_without_caap_gives_no_row():
    assert claims.claim_row(run(gae=0.1, rollout=0.2), "deletion:step=14") is None


def test_variants_are_chosen_on_one_half_and_confirmed_on_the_other():
    """The variant best on the even positions is chosen even where another is better on the odd ones, and only
    the confirmation half's images enter its comparison with GAE."""
    positions = list(range(20))
    records = {}
    for i in positions:
        rec = {name: {"deletion": 0.5, "insertion": 0.5} for name in (*variants.VARIANTS, "gae")}
        selection = i % 2 == 0
        rec["blur@4:8"] = {"deletion": 0.1 if selection else 0.6, "insertion": 0.5}
        rec["mean@8:12"] = {"deletion": 0.2 if selection else 0.05, "insertion": 0.9}
        records[i] = rec
    # a reference run: exact CAAP, and a rival that is best on the selection half only
    reference = {i: {"caap_exact": {"deletion": 0.3, "insertion": 0.5},
                     "attnlrp": {"deletion": 0.15 if i % 2 == 0 else 0.55, "insertion": 0.5},
                     "gae": dict(records[i]["gae"])} for i in positions}
    summary = variants.summarize(records, positions, reference)
    assert summary["halves"] == {"selection": 10, "confirmation": 10}
    assert summary["gae_vs_reference_max_abs_diff"] == 0
    chosen = summary["chosen"]["deletion"]
    assert (chosen["variant"], chosen["rival"]) == ("blur@4:8", "attnlrp")
    d = chosen["favouring_caap"]
    # lower deletion is better, so positive favours the CAAP map: 0.55 − 0.6 and 0.5 − 0.6 on the odd images
    assert d["blur@4:8 vs attnlrp"]["n"] == 10 and d["blur@4:8 vs attnlrp"]["mean"] == pytest.approx(-0.05)
    assert d["blur@4:8 vs gae"]["mean"] == pytest.approx(-0.1)
    assert d["caap_exact vs attnlrp"]["mean"] == pytest.approx(0.25)
    assert summary["chosen"]["insertion"]["variant"] == "mean@8:12"
    assert summary["chosen"]["insertion-deletion"]["variant"] == "mean@8:12"
