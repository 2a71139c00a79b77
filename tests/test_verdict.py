"""``caap verdict`` (issue 33): the claim rule for any method, as a library function and a command. Its verdicts
are checked against every row of the shipped claim table (``benchmarks/results/evidence/claims.json``, decided by
the claim scripts' own code from the same records, and independently re-derived once: see docs/RESULTS.md), and
its join by image id on runs made here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from caap import methods
from caap.bench.store import RunStore
from caap.bench.verdict import join, verdict
from caap.cli import main
from caap.errors import CaapError
from caap.methods.base import Explainer

EVIDENCE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "evidence"
FAMILY = ("caap", "caap_fast", "caap_adaptive")
CLAIMS = json.loads((EVIDENCE / "claims.json").read_text())
# the directions study's confirmation: each pseudo-run of claims.json is the variant's run joined with its baselines'
SOURCES = {"deit-directions": ("deit-top", "deit-directions"), "deit-road-directions": ("deit-road-directions",),
           "deit-road-directions-noise": ("deit-road-directions", "deit-road-directions-noise"),
           "grid-directions": ("grid-fast", "grid-directions"),
           "grid-directions-noise": ("grid-fast", "grid-directions-noise")}


def shipped(runs: tuple[str, ...]) -> tuple[str, ...]:
    """Each base run with the supplements the claim table joins to it (caap.bench.evidence.SUPPLEMENTS), where
    shipped."""
    from caap.bench.evidence import supplemented

    out = [r for base in runs for r in supplemented(base) if (EVIDENCE / r / "scores.csv").is_file()]
    return tuple(dict.fromkeys(out))


def cases() -> list[tuple[tuple[str, ...], str, list[dict]]]:
    """``(runs, method, claims.json rows)`` for every run and pseudo-run of the claim table."""
    groups: dict[tuple[tuple[str, ...], str], list[dict]] = {}
    for section in ("rows", "subsets", "zoo", "protocols"):
        for row in CLAIMS.get(section, []):
            groups.setdefault((shipped((row["run"],)), "caap"), []).append(row)
    for row in CLAIMS["directions"]["rows"] + CLAIMS["directions"]["zoo"]:
        source, name = row["run"].split(" · ")
        method = "caap" if name == "paper's CAAP" else name.split("(")[1].rstrip(")")
        if source in SOURCES:
            runs = SOURCES[source] if method != "caap" or source == "deit-directions" else SOURCES[source][:1]
        else:  # a zoo model: its run and the variant's run on the same images
            runs = (source, f"{source}-directions{'-noise' if 'noise' in method else ''}")
        groups.setdefault((shipped(tuple(runs)), method), []).append(row)
    return [(runs, method, rows) for (runs, method), rows in groups.items()]


@pytest.mark.parametrize("runs, method, rows", cases(), ids=lambda v: "+".join(v) if isinstance(v, tuple) else
                         (v if isinstance(v, str) else ""))
def test_the_verdict_reproduces_every_row_of_the_claim_table(runs, method, rows):
    result = verdict([RunStore(EVIDENCE / r).scores() for r in runs], method, family=FAMILY)
    got = {c.spec: (row.verdict, c) for row in result.rows for c in row.canvases}
    for row in rows:
        for stored in row["canvases"]:
            overall, mine = got[stored["spec"]]
            cmp_ = stored["comparison"]
            assert (overall, mine.verdict, mine.rival, mine.n) == (row["verdict"], stored["verdict"], stored["other"],
                                                                   cmp_["n"]), (runs, stored["spec"])
            assert math.isclose(mine.p_adj, cmp_["p_adj"], rel_tol=1e-12)
            assert math.isclose(mine.mean, cmp_["mean"], rel_tol=1e-9, abs_tol=1e-12)
            if cmp_["test"] == "bootstrap":
                assert (mine.low, mine.high) == pytest.approx((cmp_["low"], cmp_["high"]), rel=1e-9, abs=1e-12)
            else:
                assert mine.discordant == (cmp_["b"], cmp_["c"])


def test_the_command_writes_the_verdict_of_every_deit_top_row(tmp_path, capsys):
    out = tmp_path / "out.json"
    runs = [str(EVIDENCE / r) for r in shipped(("deit-top",))]  # deit-top and the runs joined with it
    assert main(["verdict", *runs, "--method", "caap", "--family", ",".join(FAMILY), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    stored = {c["spec"]: (r["verdict"], c) for r in CLAIMS["rows"] if r["run"] == "deit-top" for c in r["canvases"]}
    seen = {c["spec"]: (r["verdict"], r["metric"], c) for r in written["rows"] for c in r["canvases"]}
    assert set(seen) == set(stored)
    for spec, (verdict_, metric, c) in seen.items():
        assert verdict_ == stored[spec][0] and c["verdict"] == stored[spec][1]["verdict"]
        assert c["rival"] == stored[spec][1]["other"] and set(c) >= {"spec", "verdict", "rival", "mean", "low", "high",
                                                                      "p_adj"}
        assert metric in spec and c["rival"] in printed
    assert written["images"] == 200 and written["left_out"] == {} and "caap_fast" not in written["rivals"]


def test_runs_are_joined_by_image_id_and_the_rest_is_named(tmp_path):
    odd = RunStore(EVIDENCE / "deit-directions").scores()  # the 100 odd dev positions
    full = RunStore(EVIDENCE / "deit-top").scores()  # all 200
    values, left_out = join([full, odd])
    assert list(left_out) == ["deit-top"] and len(left_out["deit-top"]) == 100
    assert set(left_out["deit-top"]).isdisjoint(odd.ids())
    assert all(set(per) == odd.ids() for specs in values.values() for per in specs.values())
    result = verdict([full, odd], "caap:direction=both:layers=4:8:context=blur", family=FAMILY)
    assert result.images == 100 and "tis" in result.rivals and "caap" not in result.rivals
    assert "Left out: 100 images only in deit-top" in result.markdown()


def scores_run(root: Path, rows: list[tuple[str, str, str, float]]) -> Path:
    """A shipped-evidence folder (scores.csv of ``(id, method, metric, value)`` rows) written by hand."""
    root.mkdir(parents=True)
    ids = sorted({r[0] for r in rows})
    lines = ["image,id,method,metric,value"] + [f"{ids.index(i)},{i},{m},{k},{v!r}" for i, m, k, v in rows]
    (root / "scores.csv").write_text("\n".join(lines) + "\n")
    return root


def test_a_join_refuses_two_different_scores_of_one_map(tmp_path):
    a = scores_run(tmp_path / "a", [("x.png", "gae", "deletion", 0.1), ("y.png", "gae", "deletion", 0.2)])
    b = scores_run(tmp_path / "b", [("x.png", "gae", "deletion", 0.3), ("x.png", "mine", "deletion", 0.1)])
    with pytest.raises(CaapError, match="'gae' 'deletion' has other scores in 'a' and 'b'"):
        join([RunStore(a).scores(), RunStore(b).scores()])
    with pytest.raises(CaapError, match="share no image id"):
        join([RunStore(a).scores(), RunStore(scores_run(tmp_path / "c", [("z.png", "gae", "deletion", 1.0)]))
              .scores()])


def test_bad_verdict_requests_get_one_line(tmp_path, capsys):
    run = str(EVIDENCE / "deit-road")
    for args, expected in [(["--method", "nope"], "--method 'nope' is not in the runs"),
                           (["--method", "caap", "--metrics", "deletion"], "--metrics 'deletion' names none"),
                           (["--method", "caap", "--family", "caap_fast,gae,attnlrp,bidirectional,gradcam,transformer_"
                             "attribution,tis"], "no rival of 'caap'")]:
        assert main(["verdict", run, *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
    assert main(["verdict", str(tmp_path), "--method", "caap"]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    assert main(["verdict", run, "--method", "caap", "--json", str(mine)]) == 2
    assert "exists and is not an earlier caap verdict" in capsys.readouterr().err
    assert json.loads(mine.read_text()) == {"my": "notes"}


class Centre(Explainer):
    """A user's method: a centre prior, each patch scored by its negated distance to the grid's centre."""

    name = "centre_prior"

    def _attribute(self, images, target, *, grid, forward, **options):
        import torch

        from caap.methods.base import Maps

        h, w = grid
        y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
        return Maps(-(y**2 + x**2).sqrt().expand(images.shape[0], h, w).clone())


def test_a_users_registered_method_gets_a_verdict(tmp_path, capsys):
    from caap.bench import BenchConfig, run

    methods.register(Centre)
    try:
        run(BenchConfig(model="caap-demo", data="synthetic", limit=12, methods=["centre_prior", "gae", "rollout"],
                        metrics=["pointing_game", "deletion:step=8", "deletion:step=8:canvas=blur"]),
            tmp_path / "run", progress=False, report=False)
    finally:
        methods.METHODS.unregister("centre_prior")
    assert main(["verdict", str(tmp_path / "run"), "--method", "centre_prior", "--json",
                 str(tmp_path / "v.json")]) == 0
    written = json.loads((tmp_path / "v.json").read_text())
    assert written["rivals"] == ["gae", "rollout"]
    rows = {r["metric"]: r for r in written["rows"]}
    assert set(rows) == {"pointing_game", "deletion:step=8"}
    assert [c["spec"] for c in rows["deletion:step=8"]["canvases"]] == ["deletion:step=8",
                                                                         "deletion:step=8:canvas=blur"]
    assert all(r["verdict"] in ("holds", "tie", "does not hold") for r in written["rows"])
    assert rows["pointing_game"]["canvases"][0]["low"] is None  # McNemar: discordant counts, no interval
