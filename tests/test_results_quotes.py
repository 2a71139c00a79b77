"""Every number docs/RESULTS.md's prose quotes about the claim rows, recomputed from the shipped records
(``benchmarks/results/evidence/claims.json`` and the per-image scores) and formatted as the prose gives it, so a
sentence cannot drift from the records (issue 34). The generated blocks themselves are checked by
tests/test_claims.py; this file checks the sentences around them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caap.bench.evidence import FAITH, load, supplemented
from caap.bench.verdict import join
from caap.metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = ROOT / "benchmarks" / "results" / "evidence"
CLAIMS = json.loads((EVIDENCE / "claims.json").read_text())
TEXT = " ".join((ROOT / "docs" / "RESULTS.md").read_text().split())
ZOO_MODELS = ("demo-simple", "demo-conjunction", "zoo-deit3-simple", "zoo-reg_avg-simple", "zoo-clip-simple",
              "zoo-eva-simple")


def row(section: str, run: str, label: str) -> dict:
    return next(r for r in CLAIMS[section] if r["run"] == run and r["label"] == label)


def canvas(r: dict, name: str | None) -> dict:
    return next(c for c in r["canvases"] if c["canvas"] == name)


def ordinal(n: int) -> str:
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n if n < 20 else n % 10, 'th')}"


def test_the_deit_top_sentences():
    deletion = row("rows", "deit-top", "deletion ↓")
    mean, blur = canvas(deletion, "mean"), canvas(deletion, "blur")
    assert mean["other"] == blur["other"] == "tis" and deletion["verdict"] == "does not hold"
    p = max(mean["comparison"]["p_adj"], blur["comparison"]["p_adj"])
    assert (f"deletion {mean['other_value']:.3f} against CAAP's {mean['caap']:.3f} on the mean canvas, "
            f"{blur['other_value']:.3f} against {blur['caap']:.3f} on the blurred one; Holm p = {p:.2g}") in TEXT
    insertion = canvas(row("rows", "deit-top", "insertion ↑"), "blur")
    assert insertion["other"] == "attnlrp"
    assert f"insertion {insertion['other_value']:.3f} against {insertion['caap']:.3f}" in TEXT
    negative = {c["canvas"]: c["other"] for c in row("rows", "deit-top", "neg. perturbation ↑")["canvases"]}
    assert set(negative.values()) == {"libragrad", "attnlrp"}
    cells = [c for r in CLAIMS["rows"] if r["run"] == "deit-top" for c in r["canvases"]]
    ranks, methods = sorted(c["rank"] for c in cells), {c["methods"] for c in cells}
    assert f"CAAP ranks {ordinal(ranks[0])} to {ordinal(ranks[-1])} of {methods.pop()}" in TEXT and not methods


def better_cells(method: str) -> int:
    """On how many of deit-top's eight metric × canvas cells ``method`` has a better mean than CAAP."""
    runs = load(EVIDENCE)
    values, _ = join([runs[r] for r in supplemented("deit-top") if r in runs])
    count = 0
    for _, specs in FAITH:
        for spec in specs:
            mine = sum(values[method][spec].values()) / len(values[method][spec])
            caap = sum(values["caap"][spec].values()) / len(values["caap"][spec])
            count += (mine > caap) == METRICS.build(spec).higher_is_better
    return count


@pytest.mark.parametrize(("method", "phrase"), [("libragrad", "LibraGrad has a better mean than CAAP on {n} of"),
                                                ("legrad", "LeGrad on {n},"), ("atman", "AtMan and ViT-CX on none"),
                                                ("vit_cx", "AtMan and ViT-CX on none")])
def test_the_newer_rivals_cells(method, phrase):
    n = better_cells(method)
    assert phrase.format(n=n) in TEXT and ("none" not in phrase or n == 0)


def test_the_road_and_grid_sentences():
    road = [row("rows", "deit-road", label) for label in ("ROAD ↑", "ROAD MoRF ↓", "ROAD LeRF ↑")]
    assert [r["canvases"][0]["other"] for r in road] == ["tis", "tis", "attnlrp"]
    assert all(r["verdict"] == "does not hold" for r in road)
    assert "TIS beats it on the combined score and on MoRF and AttnLRP on LeRF" in TEXT
    assert row("rows", "grid-fast", "pointing game ↑")["verdict"] == "tie"
    mass = row("rows", "grid-fast", "relevance mass (patch) ↑")["canvases"][0]
    assert mass["other"] == "gradcam" and mass["verdict"] == "does not hold"
    assert f"Grad-CAM puts more mass in the right cell ({mass['other_value']:.2f} against {mass['caap']:.2f})" in TEXT


def test_the_zoo_sentence():
    rows = [canvas(row("zoo", run, "relevance mass (patch) ↑"), None) for run in ZOO_MODELS]
    assert {c["other"] for c in rows} <= {"lrp", "attnlrp", "integrated_gradients"}
    caap, other = [c["caap"] for c in rows], [c["other_value"] for c in rows]
    assert (f"relevance mass: CAAP {min(caap):.2f}–{max(caap):.2f}, the best other "
            f"{min(other):.2f}–{max(other):.2f}") in TEXT
    holds = [r for r in CLAIMS["zoo"] if r["run"] in ZOO_MODELS and r["verdict"] == "holds"]
    assert not holds and "CAAP beats every other method on no localisation metric" in TEXT


def test_the_cheaper_maps_sentence():
    """CAAP against the weaker fast methods (deit-rest, every 4th image): best mean on 7 of 8 cells, no row holds
    (GAE is not separated from it), and the cheap newer rivals behind it on deit-top."""
    cells = [c for r in CLAIMS["subsets"] if r["run"] == "deit-rest" for c in r["canvases"]]
    first, methods = sum(c["rank"] == 1 for c in cells), {c["methods"] for c in cells}
    assert f"best mean of {methods.pop()} on {first} of {len(cells)} metric × canvas cells" in TEXT and not methods
    assert all(r["verdict"] == "tie" and "gae" in {c["other"] for c in r["canvases"]} | set(r["canvases"][0]["tied"])
               for r in CLAIMS["subsets"] if r["run"] == "deit-rest")
    assert f"is behind CAAP's mean on {8 - better_cells('legrad')} of deit-top's 8 cells" in TEXT
    assert f"LibraGrad, another, on {8 - better_cells('libragrad')})" in TEXT


def test_the_zoo_ranks_sentence():
    """What "What the table says" gives of relevance rank and AP on the six small models."""
    verdicts = {(run, label): row("zoo", run, label) for run in ZOO_MODELS for label in ("relevance rank ↑", "AP ↑")}
    v = {k: r["verdict"] for k, r in verdicts.items()}
    assert v["zoo-clip-simple", "relevance rank ↑"] == v["zoo-clip-simple", "AP ↑"] == "tie"
    assert (v["demo-simple", "AP ↑"], v["demo-simple", "relevance rank ↑"]) == ("tie", "does not hold")
    assert verdicts["demo-simple", "relevance rank ↑"]["canvases"][0]["other"] == "vit_cx"
    assert (v["demo-conjunction", "relevance rank ↑"], v["demo-conjunction", "AP ↑"]) == ("tie", "does not hold")
    assert verdicts["demo-conjunction", "AP ↑"]["canvases"][0]["other"] == "rollout"
    ranks = {k: (r["canvases"][0]["rank"], r["canvases"][0]["methods"]) for k, r in verdicts.items()}
    deit3, reg, eva = "zoo-deit3-simple", "zoo-reg_avg-simple", "zoo-eva-simple"
    assert all(v[m, label] == "does not hold" for m in (deit3, reg, eva) for label in ("relevance rank ↑", "AP ↑"))
    rr = [ranks[m, "relevance rank ↑"] for m in (deit3, reg, eva)]
    ap = [ranks[m, "AP ↑"][0] for m in (deit3, reg, eva)]
    assert (f"on relevance rank CAAP is {ordinal(rr[0][0])} of {rr[0][1]} on the DeiT-3- and register-style models "
            f"and {ordinal(rr[2][0])} of {rr[2][1]} on the Eva-style one (AP: {ordinal(ap[0])}, {ordinal(ap[1])} and "
            f"{ordinal(ap[2])})") in TEXT and rr[0] == rr[1]


def test_the_grid_slow_and_road_details():
    """The grid-slow relevance-mass row and deit-road's rows as "What the table says" quotes them."""
    def interval(c):
        low, high = (f"{v:+.3f}".replace("-", "−") for v in (c["comparison"]["low"], c["comparison"]["high"]))
        return f"{c['comparison']['mean']:+.3f}".replace("-", "−") + f" [{low}, {high}]"

    mass = row("subsets", "grid-slow", "relevance mass (patch) ↑")["canvases"][0]
    assert mass["other"] == "gradcam"
    assert (f"Grad-CAM puts more mass in the right cell ({mass['other_value']:.3f} against {mass['caap']:.3f}, "
            f"{interval(mass)}, Holm p = {mass['comparison']['p_adj']:.2g}") in TEXT
    road, morf, lerf = (row("rows", "deit-road", label)["canvases"][0]
                        for label in ("ROAD ↑", "ROAD MoRF ↓", "ROAD LeRF ↑"))
    assert (f"TIS is better on the combined score ({road['other_value']:.3f} against {road['caap']:.3f}, "
            f"{interval(road)}, Holm p = {road['comparison']['p_adj']:.2g}) and on MoRF ({morf['other_value']:.3f} "
            f"against {morf['caap']:.3f}, p = {morf['comparison']['p_adj']:.2g}), AttnLRP on LeRF "
            f"({lerf['other_value']:.3f} against {lerf['caap']:.3f}, {interval(lerf)}, p = "
            f"{lerf['comparison']['p_adj']:.2g})") in TEXT
    ranks = sorted(row("rows", "deit-road", label)["canvases"][0]["rank"] for label in ("ROAD ↑", "ROAD MoRF ↓"))
    assert f"CAAP ranks {ordinal(min(ranks))} to {ordinal(max(ranks))} of {road['methods']}" in TEXT


def test_the_robustness_sentences():
    """The robustness prose quotes the generated table's rows: every number here is read from the same records."""
    from caap.bench.robustness import STUDIES, study_rows

    runs = load(EVIDENCE)
    rows = {}
    for study in STUDIES:
        for line in study_rows(study, runs):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0], cells[1], cells[2]] = cells
    tis = "TIS (every 4th image): k-means "
    authors = rows["deletion ↓", "mean", tis + "0.1.6, seed 0 (the authors')"]
    later = rows["deletion ↓", "mean", tis + "0.2.2, seed 0"]
    sign = str.maketrans({"-": "−"})
    assert (f"with the authors' k-means TIS − CAAP is {authors[6].translate(sign)} on the mean canvas (Holm p "
            f"{authors[7]}), with 0.2.2's start {later[6].translate(sign)} (p {later[7]}), a tie") in TEXT
    def label(version: str, seed: int) -> str:
        return f"TIS: k-means {version}, seed {seed}" + (" (the authors')" if (version, seed) == ("0.1.6", 0) else "")

    ten = [rows["deletion ↓", c, label(v, k)] for c in ("mean", "blur") for v in ("0.1.6", "0.2.2") for k in (0, 1, 2)]
    old = [float(r[5]) for r in ten if "0.1.6" in r[2]]
    new = [float(r[5]) for r in ten if "0.2.2" in r[2]]
    caap = [float(r[4]) for r in ten]
    assert f"under every seed ({min(old):.3f}–{max(old):.3f} against {min(caap):.3f}–{max(caap):.3f}" in TEXT
    assert f"loses the lead under every seed ({min(new):.3f}–{max(new):.3f}, every interval across 0)" in TEXT
    assert all(float(r[6].split("[")[1].split(",")[0]) < 0 for r in ten if "0.2.2" in r[2])
    uniform = [rows["insertion ↑", c, "AttnLRP: uniform rule (the authors')"] for c in ("mean", "blur")]
    constant = [rows["insertion ↑", c, "AttnLRP: constant attention (CP-LRP)"] for c in ("mean", "blur")]
    assert (f"(+{float(uniform[0][6].split(' ')[0]):.3f} and +{float(uniform[1][6].split(' ')[0]):.3f}, Holm p "
            f"{uniform[0][7]} over") in TEXT and uniform[0][7] == uniform[1][7]
    assert f"(−{-float(constant[0][6].split(' ')[0]):.3f} on both, p {constant[0][7]})" in TEXT


def test_the_grid_fast_sentence():
    point = row("rows", "grid-fast", "pointing game ↑")["canvases"][0]
    mass = row("rows", "grid-fast", "relevance mass (patch) ↑")["canvases"][0]
    c = point["comparison"]
    assert point["other"] == "legrad" and "tis" in point["tied"] and c["b"] == 0
    assert (f"the pointing game is a tie (CAAP {point['caap']:.3f}, LeGrad and TIS {point['other_value']:.3f}: "
            f"{c['c']} discordant cells, all theirs, Holm p = {c['p_adj']:.2g}) and Grad-CAM puts more of its mass in "
            f"the right cell ({mass['other_value']:.3f} against {mass['caap']:.3f}, p = "
            f"{mass['comparison']['p_adj']:.2g}); CAAP ranks {ordinal(point['rank'])} and {ordinal(mass['rank'])} of "
            f"{point['methods']}") in TEXT


def test_the_readmes_count_of_baselines_is_the_registrys():
    from caap.methods import available

    baselines = [m for m in available() if m not in ("caap", "caap_fast", "caap_adaptive")]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"beside {len(baselines)} baselines (LibraGrad, LeGrad, AtMan, TIS," in readme


def test_the_published_protocols_sentence():
    rows = CLAIMS["protocols"]
    cells = [r["canvases"][0] for r in rows]
    n = {c["comparison"]["n"] for c in cells}
    ranks = sorted(c["rank"] for c in cells)
    assert len(rows) == 4 and all(r["verdict"] == "tie" for r in rows) and n == {10}
    assert (f"On these 10 images every row ties: CAAP ranks {ordinal(ranks[0])} to {ordinal(ranks[-1])} of "
            f"{cells[0]['methods']} by mean") in TEXT
