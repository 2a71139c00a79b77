"""How robust the decisive rivals' wins are (issue 34): TIS's deletion and insertion under other k-means seeds and
another k-means release's start, AttnLRP's under CP-LRP's attention rule.

The claim rows keep the authors' settings (TIS: seed 0 of their pinned k-means, fast-pytorch-kmeans 0.1.6;
AttnLRP: its uniform rule for the attention's matmuls). Each study's runs recompute the rival under other settings
on a subset of the dev images; joined by image id with deit-top (the authors' setting and CAAP on the same images),
each setting is compared with CAAP on each canvas by the claim rule's test (paired bootstrap of the mean difference,
Holm over the settings × canvases of a metric): does the rival's win over CAAP hold under every setting, or is it
one setting's?

    robustness_table(load(folder))   # the generated block "robustness" of docs/RESULTS.md ("" without the runs)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from caap.bench import stats
from caap.bench.store import RunScores
from caap.bench.verdict import canvas_of, join
from caap.metrics import METRICS

BASE = "deit-top"
SPECS = {"deletion ↓": ("deletion:step=14", "deletion:step=14:canvas=blur"),
         "insertion ↑": ("insertion:step=14:canvas=mean", "insertion:step=14")}


@dataclass(frozen=True)
class Study:
    """A rival (``rival``, its method name in deit-top) and the runs that recompute it under other settings."""

    rival: str
    runs: tuple[str, ...]
    label: str


STUDIES = (Study("tis", ("deit-tis-seeds", "deit-tis-kmeans"), "TIS"),  # every 20th image
           Study("tis", ("deit-tis-kmeans-50",), "TIS (every 4th image)"),
           Study("attnlrp", ("deit-attnlrp-rules",), "AttnLRP"))


def setting(method: str, rival: str) -> str:
    """A readable name of a rival's setting from its method spec (``tis:kmeans=0.2.2:seed=1`` ->
    ``k-means 0.2.2, seed 1``); the authors' own (the bare name) is marked."""
    if method == rival:
        return {"tis": "k-means 0.1.6, seed 0 (the authors')",
                "attnlrp": "uniform rule (the authors')"}.get(rival, "the authors'")
    options = dict(part.split("=", 1) for part in method.split(":")[1:])
    if rival == "tis":
        return f"k-means {options.get('kmeans', '0.1.6')}, seed {options.get('seed', '0')}"
    if rival == "attnlrp" and options.get("attention") == "constant":
        return "constant attention (CP-LRP)"
    return ", ".join(f"{k}={v}" for k, v in options.items())


def seeds(values: Mapping[str, dict], rival: str = "tis") -> dict[str, str]:
    """``{setting: method}`` of the rival's methods in ``values``: the authors' (the bare name) first."""
    found = {setting(rival, rival): rival} if rival in values else {}
    found.update(sorted((setting(m, rival), m) for m in values if m.startswith(f"{rival}:")))
    return found


def study_rows(study: Study, runs: Mapping[str, RunScores]) -> list[str]:
    """One line per metric × canvas × setting: n, CAAP's mean, the setting's mean, its difference to CAAP
    (favouring the rival) with the Holm-level interval and the Holm p over the settings × canvases of the metric."""
    present = [runs[r] for r in study.runs if r in runs]
    if not present or BASE not in runs:
        return []
    values, _ = join([runs[BASE], *present])
    settings = seeds(values, study.rival)
    lines = []
    for label, specs in SPECS.items():
        higher = METRICS.build(specs[0]).higher_is_better
        compared = stats.compare_all({(name, spec): (values[method][spec], values["caap"][spec])
                                      for name, method in settings.items() for spec in specs}, higher)
        for spec in specs:
            caap = values["caap"][spec]
            for name, method in settings.items():
                c, mine = compared[(name, spec)], values[method][spec]
                lines.append(f"| {label} | {canvas_of(spec)[1]} | {study.label}: {name} | {len(caap)} | "
                             f"{sum(caap.values()) / len(caap):.3f} | {sum(mine.values()) / len(mine):.3f} | "
                             f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | {c['p_adj']:.2g} |")
    return lines


def robustness_table(runs: Mapping[str, RunScores]) -> str:
    """Every study's rows under one header ("" when no study's runs are there)."""
    lines = [line for study in STUDIES for line in study_rows(study, runs)]
    if not lines:
        return ""
    head = ["| metric | canvas | rival: setting | n | CAAP | rival | rival − CAAP, favouring the rival [CI] | "
            "p (Holm) |", "|---|---|---|---|---|---|---|---|"]
    return "\n".join(head + lines) + "\n"
