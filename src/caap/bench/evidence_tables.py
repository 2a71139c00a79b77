"""The generated blocks of docs/RESULTS.md beside the claim table (:mod:`caap.bench.evidence`): CAAP's context ×
canvas table, what the pointing-game rule changes, the seconds per map of each run, and the directions study's
confirmation — the variants chosen on the even dev positions (``directions-select/chosen.json``), each judged on
the odd ones by the claim rule: its run joined by image id with the run of the baselines on the same images.

    blocks(load(folder), folder)   # every generated block of docs/RESULTS.md, by name
    claims_record(load(folder), folder)   # what benchmarks/results/evidence/claims.json holds
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from caap.bench import stats
from caap.bench.evidence import (
    FAITH,
    GRID,
    PROTOCOL_ROWS,
    ROAD,
    ROWS,
    SUBSET_ROWS,
    ZOO_METRICS,
    ZOO_ROWS,
    ZOO_RUNS,
    Claim,
    claim_table,
    decide,
    decide_all,
    faith,
    provenance_table,
    run_table,
    single,
    supplemented,
    zoo_table,
)
from caap.bench.robustness import robustness_table
from caap.bench.store import RunScores
from caap.bench.verdict import canvas_of, join
from caap.metrics import METRICS

CANVASES = ("mean", "blur", "black")
CROSS = {"deletion ↓": {"mean": "deletion:step=14", "blur": "deletion:step=14:canvas=blur",
                        "black": "deletion:step=14:canvas=black"},
         "insertion ↑": {"mean": "insertion:step=14:canvas=mean", "blur": "insertion:step=14",
                         "black": "insertion:step=14:canvas=black"}}
CONTEXTS = {"mean": "caap", "blur": "caap:context=blur", "black": "caap:context=black"}
POINTING_RUNS = ("grid-fast", "grid-slow", "demo-simple", "demo-conjunction", "zoo-deit3-simple",
                 "zoo-reg_avg-simple", "zoo-clip-simple", "zoo-eva-simple")
# (the variants' run, the baselines' run, what the join keeps, the rows, whether the paper's CAAP is drawn here)
SOURCES = (("deit-directions", "deit-top", "odd positions", FAITH, True),
           ("deit-road-directions", "deit-road-directions", "odd positions", ROAD, True),
           ("deit-road-directions-noise", "deit-road-directions", "odd positions", ROAD, False),
           ("grid-directions", "grid-fast", "every cell (not split by position)", GRID, True),
           ("grid-directions-noise", "grid-fast", "every cell (not split by position)", GRID, False))
# the demo models and the backbone zoo: (a variant's run, the run of the baselines on the same images, its direction)
ZOO = tuple((f"{run}-directions{suffix}", run, direction) for suffix, direction in (("", "both"), ("-noise", "noise"))
            for run in ZOO_RUNS if not run.endswith("-slow"))
INSERTION = ("insertion:step=14", "insertion:step=14:canvas=mean")


def cross_table(run: RunScores) -> str:
    """CAAP built from each context (rows), scored on each canvas (columns): mean [95 % CI]; the diagonal is a
    method scored on the canvas it was built from."""
    head = [f"{metric} · {c}" for metric in CROSS for c in CANVASES]
    lines = ["| CAAP's context | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    for context, method in CONTEXTS.items():
        if method not in run.values:
            continue
        cells = []
        for specs in CROSS.values():
            for c in CANVASES:
                v = run.values[method].get(specs[c], {})
                if not v:
                    cells.append("—")
                    continue
                cell = stats.cell(v)
                text = f"{cell['mean']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"
                cells.append(f"*{text}*" if c == context else text)
        lines.append(f"| {context} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pointing_rule_table(runs: Mapping[str, RunScores]) -> str:
    """Per run: the methods whose pointing game the one rule (pixel maps pooled to the patch grid) changes from
    the pixel-level rule, and the claim row under each rule."""
    lines = ["| run | methods changed (pixel rule → patch rule) | claim row, patch rule | claim row, pixel rule |",
             "|---|---|---|---|"]
    for name in (n for n in POINTING_RUNS if n in runs):
        changed = []
        joined = supplemented(name)  # the run and the runs of the newer rivals on its images, as the claim rows
        for run in (runs[r] for r in joined if r in runs):
            for method, per in run.values.items():
                patch, pixel = per.get("pointing_game", {}), per.get("pointing_game:resolution=pixel", {})
                if patch and pixel and not np.isclose(np.mean(list(patch.values())), np.mean(list(pixel.values()))):
                    changed.append(f"{method} {np.mean(list(pixel.values())):.3f} → "
                                   f"{np.mean(list(patch.values())):.3f}")
        verdicts = []
        for spec in ("pointing_game", "pointing_game:resolution=pixel"):
            row = decide(Claim("localised", name, name, spec, (spec,), joined), runs)
            if row is None:
                verdicts.append("—")
                continue
            c = row["canvases"][0]["comparison"]
            verdicts.append(f"{row['verdict']} ({row['canvases'][0]['other']}: {c['mean']:+.3f}, "
                            f"{c['b']}:{c['c']} discordant, p = {c['p_adj']:.2g})")
        lines.append(f"| {name} | {'; '.join(changed) or 'none'} | {verdicts[0]} | {verdicts[1]} |")
    return "\n".join(lines) + "\n"


def speed_table(runs: Mapping[str, RunScores]) -> str:
    """Seconds per map inside each run, per method: median, quartiles, 90th percentile, max."""
    lines = ["| run | method | maps | median s | quartiles | p90 | max |", "|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        for method, per in run.values.items():
            v = np.asarray(list(per.get("seconds", {}).values()))
            if not len(v):
                continue
            p25, p50, p75, p90 = np.percentile(v, [25, 50, 75, 90])
            lines.append(f"| {name} | {method} | {len(v)} | {p50:.2f} | {p25:.2f}–{p75:.2f} | {p90:.2f} | "
                         f"{v.max():.2f} |")
    return "\n".join(lines) + "\n"


def chosen_variants(folder: Path) -> dict[str, str] | None:
    """``{direction: fast spec}`` the selection chose (``directions-select/chosen.json``), or None before it has."""
    path = Path(folder) / "directions-select" / "chosen.json"
    return json.loads(path.read_text())["chosen"] if path.is_file() else None


def exact(spec: str) -> str:
    return spec.replace("caap_fast:", "caap:", 1)


def direction_claims(runs: Mapping[str, RunScores], chosen: Mapping[str, str]) -> tuple[list[Claim], list[Claim]]:
    """The confirmation's rows (each variant, exact, and the paper's CAAP on the same images, joined with the
    baselines' run) and the zoo's (each variant against every method of each model's zoo run)."""
    variants = {"paper's CAAP": "caap", **{f"{d} ({exact(s)})": exact(s) for d, s in chosen.items()}}
    rows = []
    for name, method in variants.items():
        for source, base, kept, metrics, paper in SOURCES:
            if (method == "caap" and not paper) or (method != "caap" and method not in getattr(
                    runs.get(source), "values", {})):  # a variant is judged where its own run holds it
                continue
            key, data = f"{source} · {name}", f"{name}, {kept}"
            joined = tuple(dict.fromkeys((*supplemented(base), source)))
            if metrics is FAITH:
                rows += faith(data, key, joined, method)
            else:
                claim = "faithful (ROAD)" if metrics is ROAD else "localised"
                rows += single(claim, data, key, metrics, joined, method)
    zoo = []
    for source, base, direction in ZOO:
        ours = next((m for m in getattr(runs.get(source), "values", {}) if f"direction={direction}" in m), None)
        if ours is not None:
            zoo += single("localised across backbones", base, f"{base} · {direction} ({ours})", ZOO_METRICS,
                          (*supplemented(base), source), ours)
    return rows, zoo


def directions_record(runs: Mapping[str, RunScores], folder: Path) -> dict | None:
    """The confirmation decided: ``rows``, ``zoo`` and ``zoo_runs`` (as claims.json keeps them) and ``chosen``;
    None before the selection has chosen."""
    chosen = chosen_variants(folder)
    if chosen is None:
        return None
    rows, zoo = direction_claims(runs, chosen)
    zoo_decided = decide_all(zoo, runs)
    return {"chosen": chosen, "rows": decide_all(rows, runs), "zoo": zoo_decided,
            "zoo_runs": list(dict.fromkeys(r["run"] for r in zoo_decided))}


def targets(done: dict, runs: Mapping[str, RunScores], folder: Path) -> str:
    """The issue's three targets for the symmetric variant, measured: better than every method on deletion on both
    canvases, the insertion gap to AttnLRP at least halved (means on the odd positions, per canvas), at no more
    than twice the denoising map's cost (``directions_cost/summary.json``: paired per-image ratios)."""
    chosen = done["chosen"].get("both")
    if chosen is None or "deit-directions" not in runs or "deit-top" not in runs:
        return ""
    both = exact(chosen)
    lines = ["| target | measured | met |", "|---|---|---|"]
    row = next((r for r in done["rows"] if r["run"] == f"deit-directions · both ({both})"
                and r["label"].startswith("deletion")), None)
    if row is not None:
        cells = "; ".join(f"{c['canvas']}: {c['verdict']} (closest {c['other']}, {c['comparison']['mean']:+.3f}, "
                          f"p {c['comparison']['p_adj']:.2g})" for c in row["canvases"])
        met = all(c["verdict"] == "holds" for c in row["canvases"])
        lines.append(f"| better than every method on deletion, both canvases | {cells} | {'yes' if met else 'no'} |")
    values, _ = join([runs["deit-top"], runs["deit-directions"]])
    if both in values and "attnlrp" in values:
        cells, met = [], True
        for spec in INSERTION:
            mean = {k: float(np.mean(list(values[m][spec].values()))) for k, m in
                    (("attnlrp", "attnlrp"), ("both", both), ("paper", "caap"))}
            before, after = mean["attnlrp"] - mean["paper"], mean["attnlrp"] - mean["both"]
            met &= after <= before / 2
            cells.append(f"{canvas_of(spec)[1]}: AttnLRP − paper's CAAP {before:+.3f} → AttnLRP − both {after:+.3f}")
        lines.append(f"| insertion gap to AttnLRP at least halved | {'; '.join(cells)} | {'yes' if met else 'no'} |")
    cost = Path(folder).parent / "directions_cost" / "summary.json"
    band = both.split("layers=")[1].split(":context")[0]
    if cost.is_file() and band in (summary := json.loads(cost.read_text())["summary"]):
        ratios = {kind: summary[band]["ratios"][f"both / denoise, {kind}"] for kind in ("exact", "fast")}
        cells = [f"{kind}: {r['median']:.2f}× (quartiles {r['p25']:.2f}–{r['p75']:.2f})" for kind, r in ratios.items()]
        met = all(r["median"] <= 2.0 for r in ratios.values())
        lines.append(f"| no more than twice the denoising map's cost (per image, median) | {'; '.join(cells)} | "
                     f"{'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def against_paper(done: dict, runs: Mapping[str, RunScores]) -> str:
    """Each chosen variant (exact) against the paper's CAAP on the odd positions, every curve metric and canvas: the
    paired difference (positive favours the variant), one Holm family over all of them."""
    if "deit-directions" not in runs or "deit-top" not in runs:
        return ""
    values, _ = join([runs["deit-top"], runs["deit-directions"]])
    pairs, cells = {}, {}
    for direction, spec in done["chosen"].items():
        variant = exact(spec)
        for metric in (s for _, specs in FAITH for s in specs):
            ours, theirs = values.get(variant, {}).get(metric), values.get("caap", {}).get(metric)
            if ours and theirs:
                sign = 1.0 if METRICS.get(metric).higher_is_better else -1.0
                key = f"{direction} @ {metric}"
                pairs[key] = ({p: sign * v for p, v in ours.items()}, {p: sign * v for p, v in theirs.items()})
                cells[key] = (variant, metric, np.mean(list(ours.values())), np.mean(list(theirs.values())))
    if not pairs:
        return ""
    lines = ["| variant | metric | canvas | variant | paper's CAAP | variant − paper, favouring the variant "
             "[Holm-level CI] | p (Holm) | n | |", "|" + "---|" * 9]
    for key, c in stats.compare_all(pairs, higher_is_better=True).items():
        variant, metric, ours, theirs = cells[key]
        word = "better" if c["better"] else "worse" if c["worse"] else "tie"
        lines.append(f"| {variant} | {metric.split(':')[0]} | {canvas_of(metric)[1]} | {ours:.3f} | {theirs:.3f} | "
                     f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | {c['p_adj']:.2g} | {c['n']} | {word} |")
    return "\n".join(lines) + "\n"


def directions_blocks(runs: Mapping[str, RunScores], folder: Path) -> dict[str, str]:
    """The ``claims-directions``, ``directions-targets`` and ``directions-vs-paper`` blocks."""
    done = directions_record(runs, folder)
    if done is None:
        return {"claims-directions": "No variant has been chosen yet (benchmarks/directions.py choose).\n"}
    if not done["rows"]:
        return {"claims-directions": "The confirmation runs are not in the repository yet.\n"}
    text = claim_table(done["rows"])
    if done["zoo"]:
        text += ("\nAcross backbones (each chosen variant, its band at the same fractions of the depth, against "
                 "every method of each model's zoo run, first canvas shown):\n\n" + zoo_table(done["zoo"],
                                                                                             done["zoo_runs"]))
    return {"claims-directions": text, "directions-targets": targets(done, runs, folder),
            "directions-vs-paper": against_paper(done, runs)}


FRONTIER_RUNS = ("deit-top", "deit-directions")  # every method of deit-top and the directions' variants, same images


def frontier_values(runs: Mapping[str, RunScores]) -> dict | None:
    """The frontier's values: deit-top joined with deit-directions by image id (the 100 odd dev positions)."""
    if not all(r in runs for r in FRONTIER_RUNS):
        return None
    return join([runs[r] for r in FRONTIER_RUNS])[0]


def frontier_block(runs: Mapping[str, RunScores]) -> str:
    """Which method at which budget (every curve metric and canvas), and links to the frontier figures."""
    from caap.bench.frontier import budget_table

    values = frontier_values(runs)
    if values is None:
        return "The frontier's runs are not in the repository.\n"
    specs = [s for _, pair in FAITH for s in pair]
    n = len(values["caap"][specs[0]])
    figures = "\n".join(f"![{spec}](figures/{frontier_file(spec)})" for spec in specs)
    table = budget_table(values, specs, budgets=(0.5, 1.0, 10.0, 100.0))
    for label in sorted({m for m in values}, key=len, reverse=True):  # the figures' short names
        table = table.replace(label, short(label)) if ":" in label else table
    return (f"{n} images (the odd dev positions: {', '.join(FRONTIER_RUNS)} joined by image id). Best mean among the "
            "methods whose median seconds per map fit the budget; bold where it beats every other affordable method "
            "(Holm), else `(tie: …)` names those it is not separated from. Seconds as measured inside each run (one "
            "thread, runs side by side on two cores), so they compare methods of one run more exactly than across "
            "runs. Short names: `caap both 4:8 blur` is `caap:direction=both:layers=4:8:context=blur`.\n\n" + table
            + "\n" + figures + "\n")


def frontier_file(spec: str) -> str:
    key, canvas = canvas_of(spec)
    return f"frontier_{key.split(':')[0]}_{(canvas or 'none').replace(':', '')}.png"


def write_frontier_figures(runs: Mapping[str, RunScores], folder: Path) -> list[Path]:
    """The frontier figure of every curve metric and canvas, written into ``folder`` (docs/figures)."""
    from caap.bench.frontier import frontier
    from caap.io import save_figure
    from caap.viz.frontier import frontier_figure

    values = frontier_values(runs)
    written = []
    for spec in ([] if values is None else [s for _, pair in FAITH for s in pair]):
        points = frontier(values, spec)
        key, canvas = canvas_of(spec)
        arrow = "↑" if METRICS.get(spec).higher_is_better else "↓"
        fig = frontier_figure([short(p.method) for p in points], [p.seconds for p in points],
                              [p.score for p in points], [short(p.method) for p in points if p.on_front],
                              title=f"{key.split(':')[0]} {arrow}, {canvas} canvas — real DeiT-Tiny, odd dev positions",
                              ylabel=f"mean {key.split(':')[0]} AUC (95 % CI)")
        path = Path(folder) / frontier_file(spec)
        save_figure(path, fig, dpi=120)
        written.append(path)
    return written


def short(label: str) -> str:
    """A method label for a figure: ``caap:direction=both:layers=4:8:context=blur`` -> ``caap both 4:8 blur``."""
    if ":" not in label:
        return label
    name, rest = label.split(":", 1)
    parts = rest.replace("direction=", "").replace("layers=", "").replace("context=", "").split(":")
    return " ".join([name, parts[0], ":".join(parts[1:3]), *parts[3:]])


def blocks(runs: Mapping[str, RunScores], folder: Path) -> dict[str, str]:
    """Every generated block of docs/RESULTS.md, by name."""
    out = {"provenance": provenance_table(runs), "claims": claim_table(decide_all(ROWS, runs)),
           "claims-subsets": claim_table(decide_all(SUBSET_ROWS, runs)),
           "claims-zoo": zoo_table(decide_all(ZOO_ROWS, runs)),
           "claims-protocols": claim_table(decide_all(PROTOCOL_ROWS, runs))}
    out.update({f"table {name}": run_table(run) for name, run in runs.items()})
    out.update({"pointing-rule": pointing_rule_table(runs), "speed": speed_table(runs)})
    if "deit-cross" in runs:
        out["cross"] = cross_table(runs["deit-cross"])
    out.update(directions_blocks(runs, folder))
    out["frontier"] = frontier_block(runs)
    out["robustness"] = robustness_table(runs)
    return out


def claims_record(runs: Mapping[str, RunScores], folder: Path) -> dict:
    """What ``claims.json`` holds: the decided rows of the claim table, its subsets, the zoo and the directions."""
    done = directions_record(runs, folder)
    return {"rows": decide_all(ROWS, runs), "subsets": decide_all(SUBSET_ROWS, runs), "zoo": decide_all(ZOO_ROWS, runs),
            "protocols": decide_all(PROTOCOL_ROWS, runs),
            "directions": None if done is None else {k: done[k] for k in ("rows", "zoo", "zoo_runs")}}
