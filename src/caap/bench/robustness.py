"""How robust the decisive rivals' wins are (issue 34): TIS's deletion and insertion under other k-means seeds.

TIS's masks come from k-means over the blocks' activation channels, started from a random draw of centroids; the
claim rows keep the authors' setting (seed 0 of their k-means, :mod:`caap.methods.tis`). The run
``deit-tis-seeds`` recomputes TIS with seeds 1 and 2 on every 20th dev image; joined by image id with deit-top
(TIS seed 0 and CAAP on the same images), each TIS seed is compared with CAAP on each canvas by the claim rule's test
(paired bootstrap of the mean difference, Holm over the seeds × canvases of a metric): does TIS's win over CAAP hold
under every seed, or is it one initialisation's?

    robustness_table(load(folder))   # the generated block "robustness" of docs/RESULTS.md ("" without the run)
"""

from __future__ import annotations

from collections.abc import Mapping

from caap.bench import stats
from caap.bench.store import RunScores
from caap.bench.verdict import canvas_of, join
from caap.metrics import METRICS

RUN, BASE = "deit-tis-seeds", "deit-top"
SPECS = {"deletion ↓": ("deletion:step=14", "deletion:step=14:canvas=blur"),
         "insertion ↑": ("insertion:step=14:canvas=mean", "insertion:step=14")}


def seeds(values: Mapping[str, dict]) -> dict[str, str]:
    """``{label: method}`` of TIS's runs in ``values``: the authors' seed 0 (``tis``) and every ``tis:seed=K``."""
    found = {"seed 0 (the authors')": "tis"} if "tis" in values else {}
    found.update({f"seed {m.split('seed=')[1]}": m for m in sorted(values) if m.startswith("tis:seed=")})
    return found


def robustness_table(runs: Mapping[str, RunScores]) -> str:
    """Per metric and canvas: CAAP's mean, each TIS seed's mean and its difference to CAAP (favouring TIS, with the
    Holm-level interval and Holm p over the seeds × canvases of the metric), on the images of the seeds' run."""
    if RUN not in runs or BASE not in runs:
        return ""
    values, _ = join([runs[BASE], runs[RUN]])
    tis = seeds(values)
    lines = ["| metric | canvas | n | CAAP | " + " | ".join(f"TIS {k}: mean; TIS − CAAP favouring TIS [CI], p (Holm)"
                                                            for k in tis) + " |", "|" + "---|" * (4 + len(tis))]
    for label, specs in SPECS.items():
        higher = METRICS.build(specs[0]).higher_is_better
        pairs = {(name, spec): (values[method][spec], values["caap"][spec]) for name, method in tis.items()
                 for spec in specs}
        compared = stats.compare_all(pairs, higher)
        for spec in specs:
            caap = values["caap"][spec]
            cells = []
            for name, method in tis.items():
                c = compared[(name, spec)]
                mean = sum(values[method][spec].values()) / len(values[method][spec])
                cells.append(f"{mean:.3f}; {c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}], "
                             f"{c['p_adj']:.2g}")
            lines.append(f"| {label} | {canvas_of(spec)[1]} | {len(caap)} | {sum(caap.values()) / len(caap):.3f} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
