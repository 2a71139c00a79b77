"""The evidence of docs/RESULTS.md: which runs answer which claim, each row decided by the one rule of
:func:`caap.bench.verdict.verdict` (CAAP, or a variant of it, against every other method of the joined runs, on
every canvas, Holm-corrected), and the generated blocks of the document, rebuilt from the per-image scores that
ship with the repository (``benchmarks/results/evidence/<run>/scores.csv`` + ``config.json``).

    runs = load(folder)                   # {run name: RunScores}
    blocks(runs, folder)                  # {block name: Markdown}, every generated block of docs/RESULTS.md
    replace_blocks(text, blocks(...))     # the document with those blocks filled

A claim row names its runs, its method and its metric specs; a row whose runs, method or rivals are missing is
left out (its block says so). The directions study's rows and tables: :mod:`caap.bench.evidence_tables`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from caap.bench.store import RunScores, RunStore
from caap.bench.table import build, markdown, scores_csv
from caap.bench.verdict import Row, verdict
from caap.errors import CaapError
from caap.io import atomic_write_bytes

FAMILY = ("caap", "caap_fast", "caap_adaptive")  # CAAP's own modes: never its rivals


@dataclass(frozen=True)
class Claim:
    """One row of a claim table: ``label`` (``"deletion ↓"``) of ``method`` on the joined ``runs``, over the metric
    ``specs`` (its canvases); ``key`` names the row's runs in tables (a run, or a variant on a run)."""

    claim: str
    data: str
    key: str
    label: str
    specs: tuple[str, ...]
    runs: tuple[str, ...] = ()
    method: str = "caap"

    @property
    def sources(self) -> tuple[str, ...]:
        return self.runs or (self.key,)


FAITH = (("deletion ↓", ("deletion:step=14", "deletion:step=14:canvas=blur")),
         ("insertion ↑", ("insertion:step=14", "insertion:step=14:canvas=mean")),
         ("pos. perturbation ↓", ("positive_perturbation", "positive_perturbation:canvas=blur")),
         ("neg. perturbation ↑", ("negative_perturbation", "negative_perturbation:canvas=blur")))
ROAD = (("ROAD ↑", "road"), ("ROAD MoRF ↓", "road_morf"), ("ROAD LeRF ↑", "road_lerf"))
GRID = (("pointing game ↑", "pointing_game"), ("relevance mass (patch) ↑", "relevance_mass:resolution=patch"))
ZOO_RUNS = ("demo-simple", "demo-conjunction", "zoo-deit3-simple", "zoo-reg_avg-simple", "zoo-clip-simple",
            "zoo-eva-simple", "demo-simple-slow", "demo-conjunction-slow")  # -slow: RISE, MDA, extremal, 10 images
ZOO_METRICS = (("pointing game ↑", "pointing_game"), ("energy PG (patch) ↑", "energy_pointing_game:resolution=patch"),
               ("relevance mass (patch) ↑", "relevance_mass:resolution=patch"), ("relevance rank ↑", "relevance_rank"),
               ("mIoU ↑", "segmentation_miou"), ("AP ↑", "segmentation_ap"))


def faith(data: str, key: str, runs: tuple[str, ...] = (), method: str = "caap") -> list[Claim]:
    """The four curve-metric rows (deletion, insertion, ± perturbation), each on two canvases."""
    return [Claim("faithful", data, key, label, specs, runs, method) for label, specs in FAITH]


def single(claim: str, data: str, key: str, metrics, runs: tuple[str, ...] = (), method: str = "caap") -> list[Claim]:
    """One row per ``(label, spec)`` of ``metrics``, each on its one spec."""
    return [Claim(claim, data, key, label, (spec,), runs, method) for label, spec in metrics]


# runs that add rivals on the images of a base run (issue 34: the newer rivals, TIS on ROAD, Grad-CAM on grid-slow),
# joined with it by image id in every row the base run has, where they are in the results folder
SUPPLEMENTS: dict[str, tuple[str, ...]] = {
    "deit-top": ("deit-top-2025", "deit-top-vitcx", "deit-top-libragrad"),
    "grid-fast": ("grid-fast-2025", "grid-fast-libragrad"),
    "grid-slow": ("grid-slow-2025", "grid-slow-vitcx", "grid-fast-libragrad"),  # the last: on every cell, joined
    "deit-road": ("deit-road-2025", "deit-road-libragrad", "deit-road-vitcx"),
    "deit-road-directions": ("deit-road-directions-2025", "deit-road-directions-libragrad",
                             "deit-road-directions-vitcx"),
    "demo-simple": ("demo-simple-2025", "demo-simple-libragrad"),
    "demo-conjunction": ("demo-conjunction-2025", "demo-conjunction-libragrad")}


def supplemented(base: str) -> tuple[str, ...]:
    """The runs a row over ``base`` joins: the base run and its supplements."""
    return (base, *SUPPLEMENTS.get(base, ()))


ROWS = [*faith("real DeiT-Tiny, 200 images", "deit-top", supplemented("deit-top")),
        *single("faithful (ROAD)", "real DeiT-Tiny, 50 images", "deit-road", ROAD, supplemented("deit-road")),
        *single("localised", "real DeiT-Tiny, grid", "grid-fast", GRID, supplemented("grid-fast"))]
SUBSET_ROWS = [  # the slower methods on subsets of the images: CAAP against them on the same images
    *faith("real DeiT-Tiny, 50 images (weaker fast methods)", "deit-rest"),
    *faith("real DeiT-Tiny, 20 images (slow methods)", "deit-slow"),
    *faith("real DeiT-Tiny, 20 images (MDA, extremal perturbations)", "deit-slowest"),
    *single("localised", "real DeiT-Tiny, grid, slower methods", "grid-slow", GRID, supplemented("grid-slow"))]
PROTOCOLS = (("deletion, TIS's protocol ↓", "deletion_tis"), ("insertion, TIS's protocol ↑", "insertion_tis"),
             ("pos. perturbation, Chefer et al.'s ↓", "positive_perturbation_chefer"),
             ("neg. perturbation, Chefer et al.'s ↑", "negative_perturbation_chefer"))
PROTOCOL_ROWS = single("faithful (published protocols)", "real DeiT-Tiny, every 10th image", "deit-protocols",
                       PROTOCOLS)
ZOO_ROWS = [c for run in ZOO_RUNS for c in single("localised across backbones", run, run, ZOO_METRICS,
                                                   supplemented(run))]


def load(folder: str | Path) -> dict[str, RunScores]:
    """``{run: RunScores}`` for every run folder under ``folder`` with a ``scores.csv``, by name."""
    return {p.parent.name: RunStore(p.parent).scores() for p in sorted(Path(folder).glob("*/scores.csv"))}


def decide(claim: Claim, runs: Mapping[str, RunScores]) -> dict | None:
    """The row of ``claim`` as the claim tables and ``claims.json`` keep it, or None when a run, the method or every
    rival is missing."""
    supplements = {r for extra in SUPPLEMENTS.values() for r in extra}
    if any(r not in runs for r in claim.sources if r not in supplements):
        return None
    try:  # a supplement joins where it is shipped (the provenance table lists every run the rows read)
        result = verdict([runs[r] for r in claim.sources if r in runs], claim.method, FAMILY, metrics=claim.specs)
    except CaapError:
        return None
    row = next((r for r in result.rows if {c.spec for c in r.canvases} <= set(claim.specs)), None)
    return None if row is None else record(claim, row)


def record(claim: Claim, row: Row) -> dict:
    """A decided row as a JSON object (``claims.json``): the claim's names, the verdict over every canvas, and per
    canvas the method's rank and mean, the decisive rival, its comparison (caap.bench.stats) and the tied rivals."""
    from caap.metrics import METRICS

    canvases = [{"spec": c.spec, "canvas": c.canvas, "rank": c.rank, "methods": c.methods, "caap": c.value,
                 "other": c.rival, "other_value": c.rival_value, "comparison": dict(c.comparison),
                 "verdict": c.verdict, "tied": list(c.tied)} for c in row.canvases]
    return {"claim": claim.claim, "data": claim.data, "run": claim.key, "label": claim.label,
            "higher_is_better": row.higher_is_better, "binary": METRICS.get(claim.specs[0]).binary,
            "canvases": canvases, "verdict": row.verdict, "comparisons": row.comparisons}


def decide_all(claims: Sequence[Claim], runs: Mapping[str, RunScores]) -> list[dict]:
    return [d for d in (decide(c, runs) for c in claims) if d is not None]


def difference(c: dict) -> str:
    """``+0.012 [+0.004, +0.020]`` (continuous) or ``+0.046, 1:6 discordant`` (binary)."""
    if c["test"] == "mcnemar":
        return f"{c['mean']:+.3f}, {c['b']}:{c['c']} discordant"
    return f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def verdict_text(result: str) -> str:
    return {"holds": "**holds**", "does not hold": "**does not hold**"}.get(result, result)


def claim_table(decided: list[dict]) -> str:
    """The claim table: a line per row and canvas (rank among CAAP and its rivals, the decisive rival, the
    difference with its Holm-level interval, the Holm p, n, the canvas's and the row's verdict)."""
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


def zoo_table(decided: list[dict], keys: Sequence[str] = ZOO_RUNS) -> str:
    """One line per model (row key), one cell per localisation metric: the verdict, difference and decisive rival."""
    labels = [label for label, _ in ZOO_METRICS]
    lines = ["| model | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for key in keys:
        cells = []
        for label in labels:
            row = next((r for r in decided if r["run"] == key and r["label"] == label), None)
            if row is None:
                cells.append("—")
                continue
            c = row["canvases"][0]
            short = {"holds": "**holds**", "does not hold": "**no**", "tie": "tie"}[row["verdict"]]
            cells.append(f"{short} {difference(c['comparison'])} vs {c['other']}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def num_classes(config: dict) -> int:
    """The model's classes, for the accuracy line of a run's table: recorded by the runner (``info.num_classes``);
    for runs from before it, 10 for the embedded demo models and the self-trained zoo (model names starting
    ``caap-``), 1000 (ImageNet) otherwise."""
    recorded = (config.get("info") or {}).get("num_classes")
    if isinstance(recorded, int):
        return recorded
    return 10 if str(config.get("model", "")).startswith("caap-") else 1000


def run_table(run: RunScores) -> str:
    """A run's full table (:func:`caap.bench.table.build`), from its scores."""
    config = run.config
    methods = [m for m in config.get("methods", run.values) if m in run.values]
    values = {m: run.values[m] for m in methods}
    return markdown(build(values, list(config.get("metrics", [])), dict(run.outcomes), num_classes(config)))


def provenance_table(runs: Mapping[str, RunScores]) -> str:
    """Per run: methods, images, metrics, the code (commits and source hashes), CPU, versions, device and the
    sha256 of the weights file (recorded by runs started since issue 36; "not recorded" before)."""
    lines = ["| run | methods | images | metrics | code (commit, source hash) | CPU (cores, threads) | torch / timm "
             "| device | weights sha256 |", "|" + "---|" * 9]
    for name, run in runs.items():
        info = run.config.get("info", {})
        history = info.get("code_history") or []
        code = "; ".join(f"{(h.get('commit') or '?')[:10]}{'+dirty' if h.get('dirty') else ''} "
                         f"{h.get('source', '?')}" for h in history) or "not recorded"
        machine, v = info.get("machine", {}), info.get("versions", {})
        lines.append(f"| {name} | {len(run.values)} | {len(run.ids())} | {len(run.config.get('metrics', []))} | "
                     f"{code} | {machine.get('cpu', '?')} ({machine.get('cores', '?')}, {machine.get('threads', '?')})"
                     f" | {v.get('torch', '?')} / {v.get('timm', '?')} | {info.get('device', '?')} | "
                     f"{(info.get('weights_sha256') or 'not recorded')[:12]} |")
    return "\n".join(lines) + "\n"


def replace_blocks(text: str, generated: Mapping[str, str]) -> str:
    """``text`` with every ``<!-- BEGIN generated: NAME -->`` … ``<!-- END generated: NAME -->`` filled."""
    out = text
    for name, body in generated.items():
        begin, end = f"<!-- BEGIN generated: {name} -->", f"<!-- END generated: {name} -->"
        if begin in out and end in out:
            head, rest = out.split(begin, 1)
            _, tail = rest.split(end, 1)
            out = f"{head}{begin}\n{body}{end}{tail}"
    return out


def stale_blocks(text: str, generated: Mapping[str, str]) -> list[str]:
    """The names of the blocks of ``text`` that differ from ``generated``."""
    return [n for n in generated if f"<!-- BEGIN generated: {n} -->" in text
            and replace_blocks(text, {n: generated[n]}) != text]


def import_runs(source: str | Path, dest: str | Path) -> None:
    """Each run folder under ``source``: its per-image scores (regenerated from its records) and ``config.json``,
    into ``dest/<run>/``."""
    for config_path in sorted(Path(source).glob("*/config.json")):
        store = RunStore(config_path.parent)
        methods = (store.stored() or {}).get("methods", [])
        run = Path(dest) / config_path.parent.name
        atomic_write_bytes(run / "scores.csv", scores_csv(store, methods).encode())
        atomic_write_bytes(run / "config.json", config_path.read_bytes())
        print(f"{config_path.parent.name}: {len(methods)} methods", file=sys.stderr)
