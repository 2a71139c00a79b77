"""The directions study: which direction, band and context of CAAP to test, chosen on one half of the dev images
(the rule below, fixed before looking) and confirmed on the other (:mod:`caap.bench.evidence_tables`: each chosen
variant's run joined by image id with the baselines' run, judged by :func:`caap.bench.verdict.verdict`).

    caap bench ... --every 2 --methods "$(python benchmarks/directions.py variants)" --metrics "$(... metrics)" \
        --out runs/directions-select                                         # the selection half (even positions)
    python benchmarks/directions.py choose runs/directions-select           # -> chosen.json and the sweep table
    python benchmarks/directions.py choose benchmarks/results/evidence/directions-select --write docs/DIRECTIONS.md
    caap bench ... --every 2 --offset 1 --methods "$(python benchmarks/directions.py confirm runs/directions-select)"

The variants are fast-mode maps (``caap_fast``: a few forwards each, so the whole grid is affordable) of every
direction × band × context in :data:`BANDS` × :data:`CONTEXTS`. The rule, fixed before looking: among the
``both`` variants (the symmetric one the issue asks about) and separately among the ``noise`` ones, the variant with
the highest mean over the images and the two canvases of ``insertion − deletion``; ties (within 1e-4) go to the
middle band and the mean context. The chosen variants are then run on the odd positions (the confirmation half),
exact and fast, and judged there against every baseline by the claim rule.
"""

from __future__ import annotations

import numpy as np

BANDS = ("2:6", "4:8", "6:10", "8:12")
CONTEXTS = ("mean", "blur")
DIRECTIONS = ("denoise", "noise", "both")
METRICS = ("deletion:step=14", "deletion:step=14:canvas=blur", "insertion:step=14", "insertion:step=14:canvas=mean")


def variant(direction: str, band: str, context: str, kind: str = "caap_fast") -> str:
    return f"{kind}:direction={direction}:layers={band}:context={context}"


def variants() -> list[str]:
    return [variant(d, b, c) for d in DIRECTIONS for b in BANDS for c in CONTEXTS]


def criterion(values: dict[str, dict[int, float]]) -> dict[int, float]:
    """Per image: the mean over the two canvases of insertion − deletion (higher is better)."""
    dele = [values[m] for m in METRICS if m.startswith("deletion")]
    ins = [values[m] for m in METRICS if m.startswith("insertion")]
    images = sorted(set.intersection(*(set(v) for v in dele + ins)))
    return {i: float(np.mean([v[i] for v in ins]) - np.mean([v[i] for v in dele])) for i in images}


def choose(scores: dict[str, dict[str, dict[int, float]]]) -> dict:
    """The rule of the module docstring on ``{variant: {metric: {image: value}}}``; also every variant's means."""
    table = {}
    for spec, values in scores.items():
        if not all(values.get(m) for m in METRICS):
            continue
        table[spec] = {"criterion": float(np.mean(list(criterion(values).values()))),
                       **{m: float(np.mean(list(values[m].values()))) for m in METRICS},
                       "images": len(criterion(values))}
    chosen = {}
    for direction in ("both", "noise"):
        candidates = [s for s in table if f"direction={direction}:" in s]
        if not candidates:
            continue

        best = max(table[s]["criterion"] for s in candidates)
        near = [s for s in candidates if table[s]["criterion"] >= best - 1e-4]  # ties: within 1e-4 of the best

        def key(spec: str) -> tuple:
            band = spec.split("layers=")[1].split(":context")[0]
            return (band == "4:8", spec.endswith("context=mean"), table[spec]["criterion"])

        chosen[direction] = max(near, key=key)
    return {"rule": __doc__.split("The rule, fixed before looking: ")[1].split(" The chosen")[0].replace("\n", " "),
            "chosen": chosen, "variants": table}


def table(result: dict) -> str:
    """The sweep as Markdown: every variant's means on the selection half, best criterion first, chosen in bold."""
    chosen = set(result["chosen"].values())
    lines = ["| direction | band | context | deletion, mean ↓ | deletion, blur ↓ | insertion, blur ↑ | "
             "insertion, mean ↑ | criterion ↑ | images |", "|---|---|---|---|---|---|---|---|---|"]
    for spec, row in sorted(result["variants"].items(), key=lambda kv: -kv[1]["criterion"]):
        options = dict(part.split("=", 1) for part in spec.split(":")[1:] if "=" in part)
        options["layers"] = spec.split("layers=")[1].split(":context")[0]
        mark = "**" if spec in chosen else ""
        cells = [f"{row[m]:.3f}" for m in METRICS]
        lines.append(f"| {mark}{options['direction']}{mark} | {options['layers']} | {options['context']} | "
                     f"{' | '.join(cells)} | {mark}{row['criterion']:+.4f}{mark} | {row['images']} |")
    return "\n".join(lines) + "\n"


# what each confirmation run maps (benchmarks/evidence.sh 4): the curve metrics take every chosen variant exact and
# fast (the paper's CAAP and the baselines are deit-top's maps of the same images); ROAD (18 sparse solves per map)
# and the grid take the symmetric variant exact only, ROAD beside the paper's CAAP (deit-road's are the even half);
# the zoo (the demo models and the backbone zoo, the baselines from their zoo runs) the symmetric variant exact;
# road-noise, grid-noise and zoo-noise the noising variant exact on the same images (beside the runs above)
CONFIRM = {"faith": (False, ("both", "noise"), ("exact", "fast")), "road": (True, ("both",), ("exact",)),
           "grid": (False, ("both",), ("exact",)), "zoo": (False, ("both",), ("exact",)),
           "road-noise": (False, ("noise",), ("exact",)), "grid-noise": (False, ("noise",), ("exact",)),
           "zoo-noise": (False, ("noise",), ("exact",))}
DEPTH = 12  # DeiT-Tiny's blocks, where the bands were chosen


def scaled(spec: str, depth: int) -> str:
    """``spec`` with its band moved to a model of ``depth`` blocks at the same fractions of the depth (4:8 of 12 →
    2:4 of 6: the middle third), so the zoo gets the variant chosen on DeiT-Tiny, not a band chosen for it."""
    band = spec.split("layers=")[1].split(":context")[0]
    start, stop = (int(v) for v in band.split(":"))
    if (start * depth) % DEPTH or (stop * depth) % DEPTH:
        raise ValueError(f"band {band} of {DEPTH} blocks has no exact counterpart in {depth} blocks")
    return spec.replace(f"layers={band}", f"layers={start * depth // DEPTH}:{stop * depth // DEPTH}")


def confirm_specs(chosen: dict, run: str = "faith", depth: int = DEPTH) -> list[str]:
    """The methods of one confirmation run (:data:`CONFIRM`): the chosen variants, exact (``caap``) and or fast,
    their bands scaled to a model of ``depth`` blocks."""
    paper, directions, kinds = CONFIRM[run]
    out = ["caap"] if paper else []
    for direction in directions:
        spec = chosen["chosen"].get(direction)
        if spec is not None:
            spec = scaled(spec, depth) if depth != DEPTH else spec
            out += [spec.replace("caap_fast:", "caap:", 1) if kind == "exact" else spec for kind in kinds]
    return out
