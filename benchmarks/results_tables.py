"""The generated tables of docs/RESULTS.md beside the claim table (benchmarks/claims.py): CAAP's context × canvas
table, what the pointing-game rule changes, and the seconds per map of each run as distributions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from caap.bench import stats

CANVASES = ("mean", "blur", "black")
CROSS = {"deletion ↓": {"mean": "deletion:step=14", "blur": "deletion:step=14:canvas=blur",
                        "black": "deletion:step=14:canvas=black"},
         "insertion ↑": {"mean": "insertion:step=14:canvas=mean", "blur": "insertion:step=14",
                         "black": "insertion:step=14:canvas=black"}}
CONTEXTS = {"mean": "caap", "blur": "caap:context=blur", "black": "caap:context=black"}
POINTING_RUNS = ("grid-fast", "grid-slow", "demo-simple", "demo-conjunction", "zoo-deit3-simple",
                 "zoo-reg_avg-simple", "zoo-clip-simple", "zoo-eva-simple")


def cross_table(run: dict) -> str:
    """CAAP built from each context (rows), scored on each canvas (columns): mean [95 % CI]; the diagonal is a
    method scored on the canvas it was built from."""
    values = run["values"]
    head = [f"{metric} · {c}" for metric in CROSS for c in CANVASES]
    lines = ["| CAAP's context | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    for context, method in CONTEXTS.items():
        if method not in values:
            continue
        cells = []
        for specs in CROSS.values():
            for c in CANVASES:
                v = values[method].get(specs[c], {})
                if not v:
                    cells.append("—")
                    continue
                cell = stats.cell(v)
                text = f"{cell['mean']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"
                cells.append(f"*{text}*" if c == context else text)
        lines.append(f"| {context} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pointing_rule_table(runs: dict[str, dict], decide: Callable[[dict, str, str], dict | None]) -> str:
    """Per run: the pointing game of every method under the one rule (``patch``: pixel maps pooled to the patch
    grid) and at pixel level; the methods whose score the rule changes, and the claim row under each rule
    (``decide(values, spec, run)``: benchmarks/claims.py's verdict of one metric spec)."""
    lines = ["| run | methods changed (pixel rule → patch rule) | claim row, patch rule | claim row, pixel rule |",
             "|---|---|---|---|"]
    for name in POINTING_RUNS:
        if name not in runs:
            continue
        values = runs[name]["values"]
        changed = []
        for method, per in values.items():
            patch, pixel = per.get("pointing_game", {}), per.get("pointing_game:resolution=pixel", {})
            if patch and pixel and not np.isclose(np.mean(list(patch.values())), np.mean(list(pixel.values()))):
                changed.append(f"{method} {np.mean(list(pixel.values())):.3f} → {np.mean(list(patch.values())):.3f}")
        verdicts = []
        for spec in ("pointing_game", "pointing_game:resolution=pixel"):
            row = decide(values, spec, name)
            if row is None:
                verdicts.append("—")
                continue
            c = row["canvases"][0]["comparison"]
            verdicts.append(f"{row['verdict']} ({row['canvases'][0]['other']}: {c['mean']:+.3f}, "
                            f"{c['b']}:{c['c']} discordant, p = {c['p_adj']:.2g})")
        lines.append(f"| {name} | {'; '.join(changed) or 'none'} | {verdicts[0]} | {verdicts[1]} |")
    return "\n".join(lines) + "\n"


def speed_table(runs: dict[str, dict]) -> str:
    """Seconds per map inside each run, per method: median, quartiles, 90th percentile, max (one thread, runs
    side by side on two cores)."""
    lines = ["| run | method | maps | median s | quartiles | p90 | max |", "|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        for method, per in run["values"].items():
            v = np.asarray(list(per.get("seconds", {}).values()))
            if not len(v):
                continue
            p25, p50, p75, p90 = np.percentile(v, [25, 50, 75, 90])
            lines.append(f"| {name} | {method} | {len(v)} | {p50:.2f} | {p25:.2f}–{p75:.2f} | {p90:.2f} | "
                         f"{v.max():.2f} |")
    return "\n".join(lines) + "\n"


def extra_blocks(runs: dict[str, dict], decide: Callable[[dict, str, str], dict | None]) -> dict[str, str]:
    out = {"pointing-rule": pointing_rule_table(runs, decide), "speed": speed_table(runs)}
    if "deit-cross" in runs:
        out["cross"] = cross_table(runs["deit-cross"])
    return out
