"""The claim table and every generated table of docs/RESULTS.md, recomputed from the per-image scores in the
repository (``benchmarks/results/evidence/<run>/scores.csv`` + ``config.json``).

    python benchmarks/claims.py --import-runs runs      # scores.csv + config.json of each run folder -> RESULTS_DIR
    python benchmarks/claims.py                         # print the claim table
    python benchmarks/claims.py --write docs/RESULTS.md # rewrite the generated blocks of RESULTS.md
    python benchmarks/claims.py --check docs/RESULTS.md # exit 1 when a generated block differs

The rule (caap.bench.stats): a row compares CAAP (exact ``caap``, default settings) with every *other* method of
its run (CAAP's own modes and settings are not other) on every canvas of the row, each comparison a paired test
over the images (bootstrap of the mean; exact McNemar for the pointing game), Holm-corrected over all the row's
comparisons (rivals × canvases). **holds**: CAAP is better in every comparison; **does not hold**: some method is
better on some canvas; **tie** otherwise, naming the methods it ties. The p shown is Holm-adjusted, and each
interval is drawn at the level of its Holm step, so it lies clear of 0 exactly when that comparison separates.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caap.bench import stats
from caap.bench.store import RunStore
from caap.bench.table import build, markdown, per_image, read_scores, scores_csv, split_outcomes
from caap.io import atomic_write_bytes, save_json
from caap.metrics import METRICS
from caap.specs import parse

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results" / "evidence"
OURS = ("caap", "caap_fast", "caap_adaptive")
DEFAULT_CANVAS = {"deletion": "mean", "insertion": "blur", "positive_perturbation": "mean",
                  "negative_perturbation": "mean"}


def canvas(spec: str) -> str | None:
    """The canvas of a curve-metric spec (its default where the spec names none); None for other metrics."""
    parsed = parse(spec, "metric")
    if parsed.name not in DEFAULT_CANVAS:
        return None
    return str(parsed.options.get("canvas", DEFAULT_CANVAS[parsed.name]))


@dataclass(frozen=True)
class Row:
    """One claim row: a metric of one run on one or more canvases (one metric spec each)."""

    claim: str
    data: str
    run: str
    label: str
    specs: tuple[str, ...]


def faith(data: str, run: str) -> list[Row]:
    return [Row("faithful", data, run, label, specs) for label, specs in (
        ("deletion ↓", ("deletion:step=14", "deletion:step=14:canvas=blur")),
        ("insertion ↑", ("insertion:step=14", "insertion:step=14:canvas=mean")),
        ("pos. perturbation ↓", ("positive_perturbation", "positive_perturbation:canvas=blur")),
        ("neg. perturbation ↑", ("negative_perturbation", "negative_perturbation:canvas=blur")))]


ZOO_RUNS = ("demo-simple", "demo-conjunction", "zoo-deit3-simple", "zoo-reg_avg-simple", "zoo-clip-simple",
            "zoo-eva-simple", "demo-simple-slow", "demo-conjunction-slow")  # -slow: RISE, MDA, extremal, 10 images
ZOO_METRICS = (("pointing game ↑", "pointing_game"), ("energy PG (patch) ↑", "energy_pointing_game:resolution=patch"),
               ("relevance mass (patch) ↑", "relevance_mass:resolution=patch"), ("relevance rank ↑", "relevance_rank"),
               ("mIoU ↑", "segmentation_miou"), ("AP ↑", "segmentation_ap"))
ROWS = [
    *faith("real DeiT-Tiny, 200 images", "deit-top"),
    *[Row("faithful (ROAD)", "real DeiT-Tiny, 50 images", "deit-road", label, (spec,)) for label, spec in (
        ("ROAD ↑", "road"), ("ROAD MoRF ↓", "road_morf"), ("ROAD LeRF ↑", "road_lerf"))],
    *[Row("localised", "real DeiT-Tiny, grid", "grid-fast", label, (spec,)) for label, spec in (
        ("pointing game ↑", "pointing_game"), ("relevance mass (patch) ↑", "relevance_mass:resolution=patch"))],
]
SUBSET_ROWS = [  # the slower methods on subsets of the images: CAAP against them on the same images
    *faith("real DeiT-Tiny, 50 images (weaker fast methods)", "deit-rest"),
    *faith("real DeiT-Tiny, 20 images (slow methods)", "deit-slow"),
    *faith("real DeiT-Tiny, 20 images (MDA, extremal perturbations)", "deit-slowest"),
    *[Row("localised", "real DeiT-Tiny, grid, slower methods", "grid-slow", label, (spec,)) for label, spec in (
        ("pointing game ↑", "pointing_game"), ("relevance mass (patch) ↑", "relevance_mass:resolution=patch"))],
]
ZOO_ROWS = [Row("localised across backbones", run, run, label, (spec,)) for run in ZOO_RUNS
            for label, spec in ZOO_METRICS]


def load_runs(folder: Path) -> dict[str, dict]:
    """``{run: {"values", "outcomes", "config"}}`` for every run folder under ``folder`` with a scores.csv."""
    runs = {}
    for path in sorted(folder.glob("*/scores.csv")):
        values, outcomes = split_outcomes(read_scores(path))
        config = json.loads((path.parent / "config.json").read_text())
        runs[path.parent.name] = {"values": values, "outcomes": outcomes, "config": config}
    return runs


def decide(values: dict[str, dict[str, dict[int, float]]], row: Row) -> dict | None:
    """The verdict of one row (see the module docstring); None when the run lacks CAAP or a rival."""
    specs = [s for s in row.specs if values.get("caap", {}).get(s)]
    if not specs:
        return None
    metric = METRICS.get(specs[0])
    higher, binary = metric.higher_is_better, metric.binary
    pairs = {f"{m} @ {s}": (values["caap"][s], values[m][s]) for s in specs for m in values
             if m.split(":")[0] not in OURS and values[m].get(s)}
    if not pairs:
        return None
    comparisons = stats.compare_all(pairs, higher, binary)  # one Holm family: every rival on every canvas
    sign = 1 if higher else -1
    per_canvas = []
    for s in specs:
        mine = {k.split(" @ ")[0]: c for k, c in comparisons.items() if k.endswith(f" @ {s}")}
        means = {m: float(np.mean(list(values[m][s].values()))) for m in values if values[m].get(s)}
        rank = 1 + sum(sign * means[m] > sign * means["caap"] for m in means)
        verdict, tied = stats.verdict(mine)
        if verdict == "does not hold":  # the rival that beats CAAP by the most
            key = min((k for k, c in mine.items() if c["worse"]), key=lambda k: mine[k]["mean"])
        elif verdict == "holds":  # the closest rival
            key = max(mine, key=lambda k: (mine[k]["p_adj"], -mine[k]["mean"]))
        else:  # the tied rival with the best mean
            key = max(tied, key=lambda k: sign * means[k])
        per_canvas.append({"spec": s, "canvas": canvas(s), "rank": rank, "methods": len(means),
                           "caap": means["caap"], "other": key, "other_value": means[key], "comparison": mine[key],
                           "verdict": verdict, "tied": tied})
    overall, _ = stats.verdict(comparisons)
    return {"claim": row.claim, "data": row.data, "run": row.run, "label": row.label, "higher_is_better": higher,
            "binary": binary, "canvases": per_canvas, "verdict": overall, "comparisons": len(comparisons)}


def difference(c: dict) -> str:
    """``+0.012 [+0.004, +0.020]`` (continuous) or ``+0.046, 1:6 discordant`` (binary)."""
    if c["test"] == "mcnemar":
        return f"{c['mean']:+.3f}, {c['b']}:{c['c']} discordant"
    return f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def verdict_text(verdict: str) -> str:
    return {"holds": "**holds**", "does not hold": "**does not hold**"}.get(verdict, verdict)


def claim_table(decided: list[dict]) -> str:
    lines = ["| claim · data | metric | canvas | CAAP's rank | CAAP | decisive other (value) | CAAP − other, favouring "
             "CAAP [Holm-level CI] | p (Holm) | n | on this canvas | verdict |", "|" + "---|" * 11]
    for row in decided:
        for k, c in enumerate(row["canvases"]):
            cmp_ = c["comparison"]
            ties = f" (ties: {', '.join(c['tied'])})" if c["verdict"] == "tie" and c["tied"] else ""
            lines.append(
                f"| {row['claim']} · {row['data']} | {row['label'] if k == 0 else ''} | {c['canvas'] or '—'} | "
                f"{c['rank']} of {c['methods']} | {c['caap']:.3f} | {c['other']} ({c['other_value']:.3f}) | "
                f"{difference(cmp_)} | {cmp_['p_adj']:.2g} | {cmp_['n']} | {c['verdict']}{ties} | "
                f"{verdict_text(row['verdict']) if k == 0 else ''} |")
    return "\n".join(lines) + "\n"


def zoo_table(decided: list[dict], runs: tuple[str, ...] = ZOO_RUNS) -> str:
    labels = [label for label, _ in ZOO_METRICS]
    lines = ["| model | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for run in runs:
        cells = []
        for label in labels:
            row = next((r for r in decided if r["run"] == run and r["label"] == label), None)
            if row is None:
                cells.append("—")
                continue
            c = row["canvases"][0]
            short = {"holds": "**holds**", "does not hold": "**no**", "tie": "tie"}[row["verdict"]]
            cells.append(f"{short} {difference(c['comparison'])} vs {c['other']}")
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def decide_all(runs: dict[str, dict], rows: list[Row]) -> list[dict]:
    out = []
    for row in rows:
        if row.run in runs:
            decided = decide(runs[row.run]["values"], row)
            if decided is not None:
                out.append(decided)
    return out


def run_table(run: dict) -> str:
    """A run's full table (caap.bench.table.build), from its scores."""
    config = run["config"]
    metrics = [m for m in config["metrics"]]
    methods = [m for m in config["methods"] if m in run["values"]]
    values = {m: run["values"][m] for m in methods}
    classes = 10 if str(config["model"]).startswith("caap-") else 1000
    return markdown(build(values, metrics, run["outcomes"], classes))


def provenance_table(runs: dict[str, dict]) -> str:
    lines = ["| run | methods | images | metrics | code (commit, source hash) | CPU (cores, threads) | torch / timm "
             "| device |", "|" + "---|" * 8]
    for name, run in runs.items():
        info = run["config"].get("info", {})
        history = info.get("code_history") or []
        code = "; ".join(f"{(h.get('commit') or '?')[:10]}{'+dirty' if h.get('dirty') else ''} "
                         f"{h.get('source', '?')}" for h in history) or "not recorded"
        machine = info.get("machine", {})
        v = info.get("versions", {})
        images = len({i for m in run["values"].values() for c in m.values() for i in c})
        lines.append(f"| {name} | {len(run['values'])} | {images} | {len(run['config']['metrics'])} | {code} | "
                     f"{machine.get('cpu', '?')} ({machine.get('cores', '?')}, {machine.get('threads', '?')}) | "
                     f"{v.get('torch', '?')} / {v.get('timm', '?')} | {info.get('device', '?')} |")
    return "\n".join(lines) + "\n"


def blocks(folder: Path = RESULTS_DIR) -> dict[str, str]:
    """Every generated block of docs/RESULTS.md, by name."""
    from claims_directions import blocks as directions_blocks
    from results_tables import extra_blocks

    runs = load_runs(folder)
    out = {"provenance": provenance_table(runs),
           "claims": claim_table(decide_all(runs, ROWS)),
           "claims-subsets": claim_table(decide_all(runs, SUBSET_ROWS)),
           "claims-zoo": zoo_table(decide_all(runs, ZOO_ROWS))}
    out.update({f"table {name}": run_table(run) for name, run in runs.items()})
    out.update(extra_blocks(runs, lambda values, spec, run: decide(values, Row("localised", run, run, spec, (spec,)))))
    out.update(directions_blocks(runs, folder))
    return out


def replace_blocks(text: str, generated: dict[str, str]) -> str:
    """``text`` with every ``<!-- BEGIN generated: NAME -->`` … ``<!-- END generated: NAME -->`` filled."""
    out = text
    for name, body in generated.items():
        begin, end = f"<!-- BEGIN generated: {name} -->", f"<!-- END generated: {name} -->"
        if begin in out and end in out:
            head, rest = out.split(begin, 1)
            _, tail = rest.split(end, 1)
            out = f"{head}{begin}\n{body}{end}{tail}"
    return out


def import_runs(source: Path, dest: Path) -> None:
    """Each run folder's per-image scores (regenerated from its records) and config.json, into ``dest``."""
    for config_path in sorted(source.glob("*/config.json")):
        store = RunStore(config_path.parent)
        config = json.loads(config_path.read_text())
        run = dest / config_path.parent.name
        atomic_write_bytes(run / "scores.csv", scores_csv(store, config["methods"]).encode())
        atomic_write_bytes(run / "config.json", config_path.read_bytes())
        print(f"{config_path.parent.name}: {len(per_image(store, config['methods']))} methods", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--import-runs", type=Path, help="copy scores.csv + config.json of each run folder here")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, help="rewrite the generated blocks of this Markdown file")
    group.add_argument("--check", type=Path, help="exit 1 when a generated block of this file differs")
    args = parser.parse_args()
    if args.import_runs:
        import_runs(args.import_runs, args.results)
    generated = blocks(args.results)
    runs = load_runs(args.results)
    from claims_directions import recorded as directions_recorded

    save_json(args.results / "claims.json", {
        "rows": decide_all(runs, ROWS), "subsets": decide_all(runs, SUBSET_ROWS), "zoo": decide_all(runs, ZOO_ROWS),
        "directions": directions_recorded(runs, args.results)})
    atomic_write_bytes(args.results / "claims.md", (generated["claims"] + "\n" + generated["claims-subsets"] + "\n"
                                                   + generated["claims-zoo"]).encode())
    if args.write or args.check:
        path = args.write or args.check
        text = path.read_text()
        new = replace_blocks(text, generated)
        if args.check:
            stale = [n for n in generated if f"<!-- BEGIN generated: {n} -->" in text and replace_blocks(
                text, {n: generated[n]}) != text]
            print("\n".join(f"stale: {n}" for n in stale) or "up to date")
            return 1 if stale else 0
        atomic_write_bytes(path, new.encode())
    print(generated["claims"])
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
