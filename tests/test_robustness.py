"""The robustness block (issue 34): a rival's settings against CAAP on the settings' images, from hand-made
scores."""

from __future__ import annotations

import numpy as np

from caap.bench.robustness import robustness_table, seeds, setting
from caap.bench.store import RunScores

SPECS = ("deletion:step=14", "deletion:step=14:canvas=blur", "insertion:step=14:canvas=mean", "insertion:step=14")


def run(name, per_method, ids):
    return RunScores(name, {}, {m: {s: dict(zip(ids, v[s], strict=True)) for s in SPECS}
                                for m, v in per_method.items()}, {})


def test_each_setting_is_compared_with_caap_on_the_settings_images_only():
    rng = np.random.default_rng(0)
    top_ids, seed_ids = [f"im{i}" for i in range(40)], [f"im{i}" for i in range(0, 40, 2)]
    caap = {s: rng.uniform(0.3, 0.4, 40) for s in SPECS}
    tis0 = {s: caap[s] - 0.1 for s in SPECS}  # seed 0 wins clearly on deletion (lower), loses on insertion
    base = run("deit-top", {"caap": caap, "tis": tis0}, top_ids)
    tis1 = {s: (caap[s][::2] + rng.normal(0, 0.05, 20)) for s in SPECS}  # another seed: no systematic difference
    extra = run("deit-tis-seeds", {"tis:seed=1": tis1}, seed_ids)
    assert seeds({"tis": 0, "tis:seed=1": 0, "caap": 0}) == {"k-means 0.1.6, seed 0 (the authors')": "tis",
                                                            "k-means 0.1.6, seed 1": "tis:seed=1"}
    table = robustness_table({"deit-top": base, "deit-tis-seeds": extra})
    lines = table.splitlines()
    assert len(lines) == 2 + 4 * 2  # 2 metrics × 2 canvases × 2 settings
    first = [cell.strip() for cell in lines[2].split("|")]
    assert first[1:4] == ["deletion ↓", "mean", "TIS: k-means 0.1.6, seed 0 (the authors')"]
    assert first[4] == "20"  # the join keeps the seeds' images
    assert first[5] == f"{caap[SPECS[0]][::2].mean():.3f}" and first[6] == f"{tis0[SPECS[0]][::2].mean():.3f}"
    assert first[7].startswith("+0.100")  # favouring TIS
    insertion = [cell.strip() for cell in lines[6].split("|")]
    assert insertion[1] == "insertion ↑" and insertion[7].startswith("-0.100")
    assert robustness_table({"deit-top": base}) == ""


def test_the_settings_are_named_from_their_specs():
    assert setting("tis:kmeans=0.2.2:seed=2", "tis") == "k-means 0.2.2, seed 2"
    assert setting("tis:kmeans=0.2.2", "tis") == "k-means 0.2.2, seed 0"
    assert setting("attnlrp:attention=constant", "attnlrp") == "constant attention (CP-LRP)"
    assert setting("attnlrp", "attnlrp") == "uniform rule (the authors')"
