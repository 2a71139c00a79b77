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


def chosen_variants(results: Path) -> dict[str, str] | None:
    """``{direction: fast spec}`` the selection chose (``directions-select/chosen.json``), or None before it has."""
    path = results / "directions-select" / "chosen.json"
    return json.loads(path.read_text())["chosen"] if path.is_file() else None


def decided(runs: dict[str, dict], results: Path) -> dict | None:
    """The confirmation, decided once: ``pseudo`` (:func:`confirmed`'s pseudo-runs), ``rows`` (curve metrics, ROAD,
    grid), ``zoo`` and ``zoo_runs``; None before the selection has chosen. All but ``pseudo`` go to claims.json."""
    chosen = chosen_variants(results)
    if chosen is None:
        return None
    pseudo, rows = confirmed(runs, chosen)
    zoo, zoo_rows = zoo_confirmed(runs)
    return {"chosen": chosen, "pseudo": pseudo, "rows": decide_all(pseudo, rows), "zoo": decide_all(zoo, zoo_rows),
            "zoo_runs": list(zoo)}


def recorded(runs: dict[str, dict], results: Path) -> dict | None:
    """:func:`decided` as claims.json keeps it (the verdicts, not the per-image values)."""
    done = decided(runs, results)
    return None if done is None else {k: done[k] for k in ("rows", "zoo", "zoo_runs")}


INSERTION = ("insertion:step=14", "insertion:step=14:canvas=mean")


def targets(done: dict, results: Path) -> str:
    """The issue's three targets for the symmetric variant, measured: better than every method on deletion on both
    canvases (the claim row's per-canvas verdicts), the insertion gap to AttnLRP at least halved (means on the odd
    positions, per canvas), at no more than twice the cost of the denoising map (the paired per-image ratios of
    ``benchmarks/directions_cost.py``, exact and fast, in the chosen band)."""
    chosen = done["chosen"].get("both")
    if chosen is None:
        return ""
    exact = chosen.replace("caap_fast:", "caap:", 1)
    pseudo = done["pseudo"]
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
        ratios = {kind: summary[band]["ratios"][f"both / denoise, {kind}"] for kind in ("exact", "fast")}
        cells = [f"{kind}: {r['median']:.2f}× (quartiles {r['p25']:.2f}–{r['p75']:.2f})" for kind, r in ratios.items()]
        met = all(r["median"] <= 2.0 for r in ratios.values())
        lines.append(f"| no more than twice the denoising map's cost (per image, median) | {'; '.join(cells)} | "
                     f"{'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def against_paper(done: dict) -> str:
    """Each chosen variant (exact) against the paper's CAAP on the odd positions (both from :func:`confirmed`'s
    pseudo-runs), every curve metric and canvas: the paired difference (signed: positive favours the variant), one
    Holm family over all of them."""
    paper = done["pseudo"].get("deit-directions · paper's CAAP")
    if paper is None:
        return ""
    pairs, cells = {}, {}
    for direction, spec in done["chosen"].items():
        exact = spec.replace("caap_fast:", "caap:", 1)
        variant = done["pseudo"].get(f"deit-directions · {direction} ({exact})")
        for metric in (s for r in faith("", "") for s in r.specs):
            ours, theirs = (run["values"]["caap"].get(metric) if run else None for run in (variant, paper))
            if ours and theirs:
                sign = 1.0 if METRICS.get(metric).higher_is_better else -1.0
                key = f"{direction} @ {metric}"
                pairs[key] = ({p: sign * v for p, v in ours.items()}, {p: sign * v for p, v in theirs.items()})
                cells[key] = (exact, metric, np.mean(list(ours.values())), np.mean(list(theirs.values())))
    if not pairs:
        return ""
    compared = stats.compare_all(pairs, higher_is_better=True)
    lines = ["| variant | metric | canvas | variant | paper's CAAP | variant − paper, favouring the variant "
             "[Holm-level CI] | p (Holm) | n | |", "|" + "---|" * 9]
    for key, c in compared.items():
        exact, metric, ours, theirs = cells[key]
        word = "better" if c["better"] else "worse" if c["worse"] else "tie"
        lines.append(f"| {exact} | {metric.split(':')[0]} | {canvas(metric)} | {ours:.3f} | {theirs:.3f} | "
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
    return {"claims-directions": text, "directions-targets": targets(done, results),
            "directions-vs-paper": against_paper(done)}
