"""benchmarks/claims.py: the verdict of a claim row on hand-made per-image values whose answers are known (every
rival, every canvas, one Holm family), and docs/RESULTS.md's generated tables equal to what the script computes
from the per-image scores in the repository."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their siblings
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


claims = load("claims")
MEAN, BLUR = "deletion:step=14", "deletion:step=14:canvas=blur"
ROW = claims.Row("faithful", "test", "run", "deletion ↓", (MEAN, BLUR))


def run(means: dict[str, tuple[float, float]], noisy: tuple[str, ...] = ()) -> dict:
    """``{method: {metric: {image: value}}}`` over 40 images: each method's mean on the mean and blur canvases
    exactly as given, a per-image term shared by all, a small scatter of CAAP's own; ``noisy`` methods scatter
    ±0.2 around their mean (never separated from anything)."""
    rng = np.random.default_rng(0)
    shared, own = rng.normal(0, 0.05, 40), rng.normal(0, 0.01, 40)
    own -= own.mean()
    flip = 0.2 * (-1.0) ** np.arange(40)
    out = {}
    for m, pair in means.items():
        extra = own if m == "caap" else flip if m in noisy else 0.0
        out[m] = {spec: {i: mu + shared[i] + np.atleast_1d(extra)[i % np.size(extra)] for i in range(40)}
                  for spec, mu in zip((MEAN, BLUR), pair, strict=True)}
    return out


def test_holds_needs_every_rival_on_every_canvas():
    row = claims.decide(run({"caap": (0.10, 0.10), "caap_fast": (0.05, 0.05), "gae": (0.20, 0.20),
                             "rollout": (0.30, 0.30)}), ROW)
    assert row["verdict"] == "holds" and row["comparisons"] == 4  # own modes are not rivals: 2 rivals x 2 canvases
    mean, blur = row["canvases"]
    assert (mean["canvas"], blur["canvas"]) == ("mean", "blur")
    assert mean["rank"] == 2 and mean["other"] == "gae"  # the closest rival; caap_fast ranks but is not "other"
    assert mean["comparison"]["mean"] == pytest.approx(0.10)  # positive favours CAAP (lower is better)


def test_a_loss_on_one_canvas_is_a_loss_and_a_tie_on_one_is_a_tie():
    row = claims.decide(run({"caap": (0.10, 0.10), "gae": (0.20, 0.05)}), ROW)  # GAE better on blur
    assert [c["verdict"] for c in row["canvases"]] == ["holds", "does not hold"]
    assert row["verdict"] == "does not hold" and row["canvases"][1]["other"] == "gae"
    row = claims.decide(run({"caap": (0.10, 0.10), "gae": (0.20, 0.20), "mda": (0.30, 0.12)}, noisy=("mda",)), ROW)
    assert [c["verdict"] for c in row["canvases"]] == ["holds", "tie"]
    assert row["verdict"] == "tie" and row["canvases"][1]["tied"] == ["mda"]


def test_the_old_rule_said_holds_where_the_new_one_ties():
    """The best other method by mean is clearly beaten, a worse-by-mean but noisy one is not: the old rule
    (CAAP vs the best other only) said "holds"."""
    values = run({"caap": (0.10, 0.10), "gae": (0.15, 0.15), "mda": (0.16, 0.16)}, noisy=("mda",))
    row = claims.decide(values, ROW)
    assert row["verdict"] == "tie" and row["canvases"][0]["tied"] == ["mda"]


def test_a_run_without_caap_or_rivals_gives_no_row():
    assert claims.decide(run({"gae": (0.1, 0.1), "rollout": (0.2, 0.2)}), ROW) is None
    assert claims.decide(run({"caap": (0.1, 0.1), "caap_fast": (0.2, 0.2)}), ROW) is None


def test_generated_blocks_are_replaced_in_place():
    text = "a\n<!-- BEGIN generated: x -->\nold\n<!-- END generated: x -->\nb\n"
    assert claims.replace_blocks(text, {"x": "new\n", "y": "unused\n"}) == (
        "a\n<!-- BEGIN generated: x -->\nnew\n<!-- END generated: x -->\nb\n")


def test_the_shipped_results_equal_what_the_script_computes_from_the_scores():
    """Every generated table of docs/RESULTS.md (the claim table, every run's table, the context × canvas table,
    the pointing-game rule, the speeds) is recomputed from benchmarks/results/evidence/*/scores.csv."""
    text = (ROOT / "docs" / "RESULTS.md").read_text()
    generated = claims.blocks()
    present = [name for name in generated if f"<!-- BEGIN generated: {name} -->" in text]
    assert "claims" in present and "provenance" in present
    for name in present:
        assert claims.replace_blocks(text, {name: generated[name]}) == text, f"RESULTS.md's {name!r} is stale"


def test_the_directions_rule_chooses_by_its_criterion_and_breaks_ties_as_stated(tmp_path):
    directions = load("directions")
    images = range(6)

    def scores(deletion: float, insertion: float) -> dict:
        return {m: {i: (deletion if m.startswith("deletion") else insertion) + 0.01 * i for i in images}
                for m in directions.METRICS}

    values = {directions.variant(d, b, c): scores(0.30, 0.40) for d in directions.DIRECTIONS
              for b in directions.BANDS for c in directions.CONTEXTS}
    values[directions.variant("both", "6:10", "blur")] = scores(0.10, 0.60)  # the best both: chosen
    values[directions.variant("denoise", "2:6", "mean")] = scores(0.05, 0.90)  # better still, but not a candidate
    values[directions.variant("noise", "8:12", "blur")] = scores(0.30, 0.40 + 5e-5)  # within 1e-4: a tie
    result = directions.choose(values)
    assert result["chosen"] == {"both": directions.variant("both", "6:10", "blur"),
                                "noise": directions.variant("noise", "4:8", "mean")}  # ties: middle band, mean
    assert result["variants"][directions.variant("both", "6:10", "blur")]["criterion"] == pytest.approx(0.5)
    assert directions.confirm_specs(result) == [
        "caap:direction=both:layers=6:10:context=blur", "caap_fast:direction=both:layers=6:10:context=blur",
        "caap:direction=noise:layers=4:8:context=mean", "caap_fast:direction=noise:layers=4:8:context=mean"]
    assert directions.confirm_specs(result, "road") == ["caap", "caap:direction=both:layers=6:10:context=blur"]
    assert directions.confirm_specs(result, "grid") == ["caap:direction=both:layers=6:10:context=blur"]
    assert directions.confirm_specs(result, "road-noise") == ["caap:direction=noise:layers=4:8:context=mean"]
    assert directions.confirm_specs(result, "zoo", depth=6) == ["caap:direction=both:layers=3:5:context=blur"]
    with pytest.raises(ValueError, match="no exact counterpart"):
        directions.scaled(directions.variant("both", "2:6", "mean"), 4)
    table = directions.table(result)
    assert table.count("**") == 8 and table.splitlines()[2].startswith("| denoise | 2:6 | mean")
    doc = tmp_path / "DIRECTIONS.md"
    doc.write_text("before\n<!-- BEGIN generated: directions -->\nold\n<!-- END generated: directions -->\nafter\n")
    text = claims.replace_blocks(doc.read_text(), {"directions": table})
    assert "old" not in text and table in text and text.endswith("after\n")


def test_the_directions_confirmation_judges_the_chosen_variant_on_the_odd_positions_only(tmp_path):
    confirm = load("claims_directions")
    variant = "caap:direction=both:layers=4:8:context=mean"
    rng = np.random.default_rng(0)
    n = 40
    noise = {m: rng.normal(0, 0.005, n) for m in ("caap", "caap_fast", variant, "gae", "tis")}

    def curve(m, p):  # lower is better (deletion): the variant wins on odd positions, loses on even ones
        base = {"caap": 0.20, "gae": 0.18, "tis": 0.16}.get(m, 0.10 if p % 2 else 0.40)
        return float(base + noise[m][p])

    def run(methods, every=1, offset=0):
        idx = range((n - offset + every - 1) // every)
        values = {m: {s: {i: curve(m, offset + every * i) for i in idx} for s in (MEAN, BLUR)} for m in methods}
        return {"values": values, "config": {"every": every, "offset": offset, "metrics": [MEAN, BLUR]}}

    runs = {"deit-top": run(["caap", "caap_fast", "gae", "tis"]), "deit-directions": run([variant], every=2, offset=1)}
    assert confirm.positions(run(["gae"], every=4, offset=1))["gae"][MEAN].keys() == {1, 5, 9, 13, 17, 21, 25, 29,
                                                                                       33, 37}
    (results := tmp_path / "directions-select").mkdir()
    (results / "chosen.json").write_text(json.dumps({"chosen": {"both": variant.replace("caap:", "caap_fast:")}}))
    pseudo, rows = confirm.confirmed(runs, {"both": variant.replace("caap:", "caap_fast:")})
    both = next(k for k in pseudo if "both" in k)
    assert set(pseudo[both]["values"]) == {"caap", "gae", "tis"}  # the variant as ours, CAAP's own modes left out
    assert all(p % 2 == 1 for p in pseudo[both]["values"]["gae"][MEAN])  # odd positions only
    decided = {(r["run"], r["label"]): r for r in claims.decide_all(pseudo, rows)}
    assert decided[(both, "deletion ↓")]["verdict"] == "holds"  # on all positions it would lose (mean 0.25 > 0.16)
    paper = next(k for k in pseudo if "paper" in k)  # the paper's CAAP: deit-top's maps of the odd positions
    assert pseudo[paper]["values"]["caap"][MEAN] == {p: curve("caap", p) for p in range(1, n, 2)}
    assert decided[(paper, "deletion ↓")]["verdict"] == "does not hold"
    generated = confirm.blocks(runs, tmp_path)
    assert "odd positions" in generated["claims-directions"] and "**holds**" in generated["claims-directions"]
    target = generated["directions-targets"].splitlines()[2]
    assert target.startswith("| better than every method on deletion") and target.endswith("| yes |")
    against = generated["directions-vs-paper"].splitlines()[2:]
    assert len(against) == 2 and all(line.endswith("| better |") for line in against)  # both canvases, one family


def test_the_directions_zoo_rows_judge_the_symmetric_variant_against_every_method_of_the_models_zoo_run():
    confirm = load("claims_directions")
    rng = np.random.default_rng(1)
    ours = "caap:direction=both:layers=2:4:context=mean"
    n = 30

    def run(methods: dict[str, float]) -> dict:
        values = {m: {spec: {i: float(v + rng.normal(0, 0.01)) for i in range(n)} for _, spec in claims.ZOO_METRICS}
                  for m, v in methods.items()}
        return {"values": values, "config": {"every": 1, "offset": 0}}

    noise = "caap:direction=noise:layers=1:3:context=mean"
    runs = {"demo-simple": run({"caap": 0.5, "gae": 0.6, "lrp": 0.7}), "demo-simple-directions": run({ours: 0.9}),
            "zoo-clip-simple": run({"caap": 0.5, "gae": 0.6}),  # no directions run: no row
            "zoo-clip-simple-directions-noise": run({noise: 0.1})}
    pseudo, rows = confirm.zoo_confirmed(runs)
    assert list(pseudo) == [f"demo-simple · both ({ours})", f"zoo-clip-simple · noise ({noise})"]
    assert set(pseudo[f"zoo-clip-simple · noise ({noise})"]["values"]) == {"caap", "gae"}
    del pseudo[f"zoo-clip-simple · noise ({noise})"]
    rows = [r for r in rows if r.run in pseudo]
    assert set(pseudo[f"demo-simple · both ({ours})"]["values"]) == {"caap", "gae", "lrp"}  # ours as caap, then all
    decided = claims.decide_all(pseudo, rows)
    assert {r["verdict"] for r in decided} == {"holds"}
    table = claims.zoo_table(decided, tuple(pseudo))
    assert table.count("**holds**") == len(claims.ZOO_METRICS) and "vs lrp" in table


def test_the_noising_variants_extra_runs_are_judged_against_the_baselines_of_the_runs_they_sit_beside():
    confirm = load("claims_directions")
    both, noise = "caap:direction=both:layers=4:8:context=blur", "caap:direction=noise:layers=2:6:context=mean"

    def run(methods, offset=1):
        return {"values": {m: {"road": {i: float(v + 0.01 * i) for i in range(12)}} for m, v in methods.items()},
                "config": {"every": 4, "offset": offset}}

    runs = {"deit-road-directions": run({"caap": 0.1, both: 0.2, "gae": 0.15}),
            "deit-road-directions-noise": run({noise: 0.3})}
    chosen = {"both": both.replace("caap:", "caap_fast:"), "noise": noise.replace("caap:", "caap_fast:")}
    pseudo, _ = confirm.confirmed(runs, chosen)
    assert sorted(pseudo) == ["deit-road-directions · both (" + both + ")",
                              "deit-road-directions · paper's CAAP",  # once: not again from the -noise run
                              "deit-road-directions-noise · noise (" + noise + ")"]
    rivals = pseudo["deit-road-directions-noise · noise (" + noise + ")"]["values"]
    assert set(rivals) == {"caap", "gae"} and rivals["caap"]["road"][1] == 0.3  # the noising map as ours, vs GAE
