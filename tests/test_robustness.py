"""The robustness block (issue 34): TIS's seeds against CAAP on the seeds' images, from hand-made scores."""

from __future__ import annotations

import numpy as np

from caap.bench.robustness import robustness_table, seeds
from caap.bench.store import RunScores

SPECS = ("deletion:step=14", "deletion:step=14:canvas=blur", "insertion:step=14:canvas=mean", "insertion:step=14")


def run(name, per_method, ids):
    return RunScores(name, {}, {m: {s: dict(zip(ids, v[s], strict=True)) for s in SPECS}
                                for m, v in per_method.items()}, {})


def test_each_seed_is_compared_with_caap_on_the_seeds_images_only():
    rng = np.random.default_rng(0)
    top_ids, seed_ids = [f"im{i}" for i in range(40)], [f"im{i}" for i in range(0, 40, 2)]
    caap = {s: rng.uniform(0.3, 0.4, 40) for s in SPECS}
    tis0 = {s: caap[s] - 0.1 for s in SPECS}  # seed 0 wins clearly on deletion (lower), loses on insertion
    base = run("deit-top", {"caap": caap, "tis": tis0}, top_ids)
    tis1 = {s: (caap[s][::2] + rng.normal(0, 0.05, 20)) for s in SPECS}  # another seed: no systematic difference
    extra = run("deit-tis-seeds", {"tis:seed=1": tis1}, seed_ids)
    assert seeds({"tis": 0, "tis:seed=1": 0, "caap": 0}) == {"seed 0 (the authors')": "tis", "seed 1": "tis:seed=1"}
    table = robustness_table({"deit-top": base, "deit-tis-seeds": extra})
    lines = table.splitlines()
    assert len(lines) == 2 + 4
    deletion_mean = lines[2].split("|")
    assert deletion_mean[3].strip() == "20"  # the join keeps the seeds' images
    assert deletion_mean[4].strip() == f"{caap[SPECS[0]][::2].mean():.3f}"
    assert deletion_mean[5].strip().startswith(f"{tis0[SPECS[0]][::2].mean():.3f}; +0.100")  # favouring TIS
    insertion = lines[4].split("|")
    assert insertion[5].strip().startswith(f"{tis0[SPECS[2]][::2].mean():.3f}; -0.100")
    assert robustness_table({"deit-top": base}) == ""
