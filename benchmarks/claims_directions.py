"""Issue 25's confirmation half: the CAAP variants ``benchmarks/directions.py`` chose on the even dev positions,
judged on the odd ones against every baseline, by the claim table's rule (benchmarks/claims.py), beside the paper's
CAAP on the same images.

The runs (``benchmarks/evidence.sh 4``): ``deit-directions`` (the chosen variants, exact and fast, on the odd
positions; the baselines and the paper's CAAP are ``deit-top``'s maps of the same images), ``deit-road-directions``
(ROAD on every 4th image from position 1: the paper's CAAP, the symmetric variant exact, and the baselines) and
``grid-directions`` (the symmetric variant exact on the grid's cells; the baselines and the paper's CAAP from
``grid-fast``). Images are matched by their position in the dev folder (``offset + every · index`` of each run);
the curve metrics and ROAD use the odd positions only. The grid's cells mix four dev images each, so they cannot
be split by position: the selection used no localisation metric, and that row says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from claims import OURS, ZOO_METRICS, ZOO_RUNS, Row, canvas, claim_table, decide_all, faith, zoo_table

from caap.bench import stats
from caap.metrics import METRICS

ROAD = (("ROAD ↑", "road"), ("ROAD MoRF ↓", "road_morf"), ("ROAD LeRF ↑", "road_lerf"))
GRID = (("pointing game ↑", "pointing_game"), ("relevance mass (patch) ↑", "relevance_mass:resolution=patch"))
# (variants' run, baselines' run, which positions, the rows' metrics, whether the paper's CAAP row is drawn here);
# the -noise runs add the noising variant to ROAD and the grid on the same images (the baselines are not rerun)
SOURCES = (("deit-directions", "deit-top", "odd", "faith", True),
           ("deit-road-directions", "deit-road-directions", "odd", ROAD, True),
           ("deit-road-directions-noise", "deit-road-directions", "odd", ROAD, False),
           ("grid-directions", "grid-fast", "all", GRID, True),
           ("grid-directions-noise", "grid-fast", "all", GRID, False))
# the demo models and the backbone zoo: (a variant's run, the run of the baselines on the same images, its direction)
ZOO = tuple((f"{run}-directions{suffix}", run, direction) for suffix, direction in (("", "both"), ("-noise", "noise"))
            for run in ZOO_RUNS if not run.endswith("-slow"))


def positions(run: dict) -> dict[str, dict[str, dict[int, float]]]:
    """A run's values keyed by dev-folder position (``offset + every · index``) instead of its own index."""
    every, offset = int(run["config"].get("every", 1)), int(run["config"].get("offset", 0))
    return {m: {s: {offset + every * i: v for i, v in per.items()} for s, per in specs.items()}
            for m, specs in run["values"].items()}


def merged(runs: dict[str, dict], ours: str, variants: str, baselines: str, which: str) -> dict | None:
    """``{method: {metric: {position: value}}}``: ``ours`` (from ``variants``; the paper's CAAP from ``baselines``
    where ``variants`` has none) as ``caap``, every other method of ``baselines`` (CAAP's own modes left out), on the
    odd positions or all."""
    if variants not in runs or baselines not in runs:
        return None
    mine, theirs = positions(runs[variants]), positions(runs[baselines])
    if ours not in mine and ours == "caap":
        mine = theirs  # the paper's CAAP: from the baselines' run where the variants' run has none
    if ours not in mine:
        return None
    keep = (lambda p: p % 2 == 1) if which == "odd" else (lambda p: True)
    values = {"caap": mine[ours], **{m: v for m, v in theirs.items() if m.split(":")[0] not in OURS}}
    return {m: {s: {p: x for p, x in per.items() if keep(p)} for s, per in specs.items()}
            for m, specs in values.items()}


def confirmed(runs: dict[str, dict], chosen: dict) -> tuple[dict[str, dict], list[Row]]:
    """Pseudo-runs (one per variant and source, and the paper's CAAP on the same images) and their claim rows."""
    variants = {"paper's CAAP": "caap", **{f"{d} ({spec.replace('caap_fast:', 'caap:', 1)})":
                                           spec.replace("caap_fast:", "caap:", 1) for d, spec in chosen.items()}}
    out, rows = {}, []
    for name, label in variants.items():
        for source, base, which, metrics, paper in SOURCES:
            if label == "caap" and not paper:
                continue
            values = merged(runs, label, source, base, which)
            if values is None:
                continue
            key = f"{source} · {name}"
            out[key] = {"values": values}
            data = f"{name}, {'odd positions' if which == 'odd' else 'every cell (not split by position)'}"
            if metrics == "faith":
                rows += [Row(r.claim, data, key, r.label, r.specs) for r in faith(data, key)]
            else:
                rows += [Row("faithful (ROAD)" if metrics is ROAD else "localised", data, key, lab, (spec,))
                         for lab, spec in metrics]
    return out, rows


def zoo_confirmed(runs: dict[str, dict]) -> tuple[dict[str, dict], list[Row]]:
    """Pseudo-runs and rows of each chosen variant (its band scaled to the model: ``directions.py confirm --for
    zoo|zoo-noise``) against every method of the model's zoo run, on the same synthetic images."""
    out, rows = {}, []
    for source, base, direction in ZOO:
        ours = next((m for m in runs.get(source, {}).get("values", {}) if f"direction={direction}" in m), None)
        values = merged(runs, ours, source, base, "all") if ours else None
        if values is None:
            continue
        key = f"{base} · {direction} ({ours})"
        out[key] = {"values": values}
        rows += [Row("localised across backbones", base, key, label, (spec,)) for label, spec in ZOO_METRICS]
    return out, rows


def decided(runs: dict[str, dict], results: Path) -> dict[str, list[dict]] | None:
    """The decided rows (``rows``: curve metrics, ROAD, grid; ``zoo``), or None before the selection has chosen;
    saved in claims.json beside the claim table's."""
    path = results / "directions-select" / "chosen.json"
    if not path.is_file():
        return None
    pseudo, rows = confirmed(runs, json.loads(path.read_text())["chosen"])
    zoo, zoo_rows = zoo_confirmed(runs)
    return {"rows": decide_all(pseudo, rows), "zoo": decide_all(zoo, zoo_rows), "zoo_runs": list(zoo)}


INSERTION = ("insertion:step=14", "insertion:step=14:canvas=mean")


def targets(runs: dict[str, dict], results: Path, done: dict) -> str:
    """The issue's three targets for the symmetric variant, measured: better than every method on deletion on both
    canvases (the claim row's per-canvas verdicts), the insertion gap to AttnLRP at least halved (means on the odd
    positions, per canvas), at no more than twice the cost of the denoising map (the paired per-image ratios of
    ``benchmarks/directions_cost.py``, exact and fast, in the chosen band)."""
    chosen = json.loads((results / "directions-select" / "chosen.json").read_text())["chosen"].get("both")
    if chosen is None:
        return ""
    exact = chosen.replace("caap_fast:", "caap:", 1)
    pseudo, _ = confirmed(runs, {"both": chosen})
    both, paper = pseudo.get(f"deit-directions · both ({exact})"), pseudo.get("deit-directions · paper's CAAP")
    lines = ["| target | measured | met |", "|---|---|---|"]
    row = next((r for r in done["rows"] if r["run"] == f"deit-directions · both ({exact})"
                and r["label"].startswith("deletion")), None)
    if row is not None:
        cells = "; ".join(f"{c['canvas']}: {c['verdict']} (closest {c['other']}, {c['comparison']['mean']:+.3f}, "
                          f"p {c['comparison']['p_adj']:.2g})" for c in row["canvases"])
        met = all(c["verdict"] == "holds" for c in row["canvases"])
        lines.append(f"| better than every method on deletion, both canvases | {cells} | {'yes' if met else 'no'} |")
    if both is not None and paper is not None and "attnlrp" in both["values"]:
        cells, met = [], True
        for spec in INSERTION:
            mean = {k: float(np.mean(list(v["values"][m][spec].values())))
                    for k, v, m in (("attnlrp", both, "attnlrp"), ("both", both, "caap"), ("paper", paper, "caap"))}
            before, after = mean["attnlrp"] - mean["paper"], mean["attnlrp"] - mean["both"]
            met &= after <= before / 2
            cells.append(f"{canvas(spec)}: AttnLRP − paper's CAAP "
                         f"{before:+.3f} → AttnLRP − both {after:+.3f}")
        lines.append(f"| insertion gap to AttnLRP at least halved | {'; '.join(cells)} | {'yes' if met else 'no'} |")
    cost = results.parent / "directions_cost" / "summary.json"
    band = exact.split("layers=")[1].split(":context")[0]
    if cost.is_file() and band in (summary := json.loads(cost.read_text())["summary"]):
        ratios = summary[band]["ratios"]
        cells = [f"{kind}: {ratios[f'both / denoise, {kind}']['median']:.2f}× (quartiles "
                 f"{ratios[f'both / denoise, {kind}']['p25']:.2f}–{ratios[f'both / denoise, {kind}']['p75']:.2f})"
                 for kind in ("exact", "fast")]
        met = all(ratios[f"both / denoise, {k}"]["median"] <= 2.0 for k in ("exact", "fast"))
        lines.append(f"| no more than twice the denoising map's cost (per image, median) | {'; '.join(cells)} | "
                     f"{'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def against_paper(runs: dict[str, dict], chosen: dict) -> str:
    """Each chosen variant (exact) against the paper's CAAP on the odd positions, every curve metric and canvas:
    the paired difference (signed: positive favours the variant), one Holm family over all of them."""
    if "deit-directions" not in runs or "deit-top" not in runs:
        return ""
    mine, theirs = positions(runs["deit-directions"]), positions(runs["deit-top"])
    specs = [s for r in faith("", "") for s in r.specs]
    pairs, cells = {}, {}
    for direction, spec in chosen.items():
        exact = spec.replace("caap_fast:", "caap:", 1)
        for metric in specs:
            ours = mine.get(exact, {}).get(metric)
            paper = {p: v for p, v in theirs.get("caap", {}).get(metric, {}).items() if p % 2 == 1}
            if ours and paper:
                sign = 1.0 if METRICS.get(metric).higher_is_better else -1.0
                key = f"{direction} @ {metric}"
                pairs[key] = ({p: sign * v for p, v in ours.items()}, {p: sign * v for p, v in paper.items()})
                cells[key] = (exact, metric, np.mean(list(ours.values())), np.mean(list(paper.values())))
    if not pairs:
        return ""
    compared = stats.compare_all(pairs, higher_is_better=True)
    lines = ["| variant | metric | canvas | variant | paper's CAAP | variant − paper, favouring the variant "
             "[Holm-level CI] | p (Holm) | n | |", "|" + "---|" * 9]
    for key, c in compared.items():
        exact, metric, ours, paper = cells[key]
        word = "better" if c["better"] else "worse" if c["worse"] else "tie"
        lines.append(f"| {exact} | {metric.split(':')[0]} | {canvas(metric)} | {ours:.3f} | {paper:.3f} | "
                     f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | {c['p_adj']:.2g} | {c['n']} | {word} |")
    return "\n".join(lines) + "\n"


def blocks(runs: dict[str, dict], results: Path) -> dict[str, str]:
    """The ``claims-directions`` block: empty until the selection has chosen (``chosen.json``) and a confirmation
    run is in the repository."""
    done = decided(runs, results)
    if done is None:
        return {"claims-directions": "No variant has been chosen yet (benchmarks/directions.py choose).\n"}
    if not done["rows"]:
        return {"claims-directions": "The confirmation runs are not in the repository yet.\n"}
    text = claim_table(done["rows"])
    if done["zoo"]:
        text += ("\nAcross backbones (each chosen variant, its band at the same fractions of the depth, against "
                 "every method of each model's zoo run, first canvas shown):\n\n"
                 + zoo_table(done["zoo"], tuple(done["zoo_runs"])))
    chosen = json.loads((results / "directions-select" / "chosen.json").read_text())["chosen"]
    return {"claims-directions": text, "directions-targets": targets(runs, results, done),
            "directions-vs-paper": against_paper(runs, chosen)}
