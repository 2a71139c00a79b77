"""Does a CAAP variant that the fast mode makes affordable separate CAAP from the best baselines on the real DeiT-Tiny?

    python benchmarks/variants.py --out runs/variants [--reference runs/deit-top] [--every K] [--limit N]

On the held-apart dev images exact CAAP and the best baselines come close on deletion and insertion
(docs/RESULTS.md). This script scores, per image (target: its label), the fast-mode maps of single variants —
the context (``mean``, ``blur``, ``black`` at the default band ``4:8``) and the band (``6:8``, ``8:12`` with
``mean``) — and the averages the fast mode makes cheap: over the three contexts, over the three bands, over all
five maps (each map divided by its standard deviation first, so that every variant weighs the same), plus GAE,
with deletion and insertion AUC (patch grid, step 14, as `caap bench`).

The images are split in two halves by position (even: *selection*, odd: *confirmation*). On the selection
half the variant with the best mean is chosen for deletion, insertion and their difference (insertion −
deletion), and so is the best rival (GAE, and with ``--reference RUN`` every other method of that `caap bench`
run with the same metrics, e.g. AttnLRP, Bi-Attn; its exact CAAP becomes ``caap_exact``); on the confirmation
half only the chosen ones are compared: chosen variant, the default fast map and exact CAAP, each minus the
chosen rival and minus GAE — paired mean difference, 95 % paired bootstrap interval and Wilcoxon p
(``caap.bench.stats.paired``). One JSON record per image is written atomically as soon as it exists, so a
killed run resumes; ``summary.{json,md}`` at the end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from devset import real_deit_tiny, resumable

from caap import CAAP, methods
from caap.bench.stats import cell, paired
from caap.io import atomic_write_bytes, save_json
from caap.metrics import build

SINGLE = {"mean@4:8": ("mean", "4:8"), "blur@4:8": ("blur", "4:8"), "black@4:8": ("black", "4:8"),
          "mean@6:8": ("mean", "6:8"), "mean@8:12": ("mean", "8:12")}
AVERAGES = {"avg_contexts": ("mean@4:8", "blur@4:8", "black@4:8"),
            "avg_bands": ("mean@4:8", "mean@6:8", "mean@8:12"), "avg_all": tuple(SINGLE)}
VARIANTS = (*SINGLE, *AVERAGES)
METRICS = {"deletion": "deletion:step=14", "insertion": "insertion:step=14"}
CRITERIA = {"deletion": -1, "insertion": 1, "insertion-deletion": 1}  # sign: larger is better after it


def record(model, x: torch.Tensor, label: int, explainers: dict, metrics: dict) -> dict:
    """Deletion and insertion of every variant and of GAE for one image ``x [1, 3, H, W]``."""
    maps = {name: explainer.explain(x, target=[label], progress=False).scores for name, explainer in explainers.items()}
    for name, parts in AVERAGES.items():
        maps[name] = torch.stack([maps[p] / maps[p].std().clamp_min(1e-12) for p in parts]).mean(0)
    target = torch.tensor([label])
    return {name: {m: float(metric(model, x, target, maps[name])[0]) for m, metric in metrics.items()}
            for name in (*VARIANTS, "gae")}


def value(rec: dict, name: str, criterion: str) -> float:
    scores = rec[name]
    if criterion == "insertion-deletion":
        return scores["insertion"] - scores["deletion"]
    return scores[criterion]


def summarize(records: dict[int, dict], positions: list[int], reference: dict[int, dict]) -> dict:
    """Per-half means of every map, the choice per criterion on the selection half (variant and rival), and
    the confirmation half's paired differences. ``reference``: ``{image: {method: {metric: value}}}``."""
    halves = {"selection": positions[0::2], "confirmation": positions[1::2]}
    merged = {i: {**reference.get(i, {}), **records[i]} for i in records}  # GAE: this script's own
    extra = sorted({n for i in reference for n in reference[i]} - {"gae"})
    names = (*VARIANTS, "gae", *extra)
    rivals = ("gae", *(n for n in extra if n != "caap_exact"))
    out: dict = {"halves": {h: len(v) for h, v in halves.items()}, "means": {}, "chosen": {}}
    # the same GAE maps scored here and in the reference run: a check that both runs score alike
    gae = [abs(records[i]["gae"][m] - reference[i]["gae"][m]) for i in records if "gae" in reference.get(i, {})
           for m in METRICS]
    out["gae_vs_reference_max_abs_diff"] = max(gae) if gae else None
    for half, idx in halves.items():
        out["means"][half] = {n: {c: cell({i: value(merged[i], n, c) for i in idx if n in merged[i]})
                                  for c in CRITERIA} for n in names}
    for criterion, sign in CRITERIA.items():
        sel = out["means"]["selection"]
        chosen = max(VARIANTS, key=lambda n: sign * sel[n][criterion]["mean"])
        rival = max(rivals, key=lambda n: sign * sel[n][criterion]["mean"])
        conf = halves["confirmation"]

        def per(name: str) -> dict[int, float]:
            return {i: sign * value(merged[i], name, criterion) for i in conf if name in merged[i]}  # noqa: B023

        maps = [chosen, "mean@4:8", *(("caap_exact",) if "caap_exact" in extra else ())]
        out["chosen"][criterion] = {
            "variant": chosen, "rival": rival,
            "favouring_caap": {f"{m} vs {r}": paired(per(m), per(r)) for m in dict.fromkeys(maps)
                               for r in dict.fromkeys((rival, "gae"))}}
    return out


def markdown(summary: dict, settings: dict) -> str:
    halves = summary["halves"]
    lines = [f"# CAAP variants vs the best rivals: {settings['model']}, selection {halves['selection']} images, "
             f"confirmation {halves['confirmation']}", "",
             "| map | selection: deletion ↓ | insertion ↑ | ins − del ↑ | confirmation: deletion ↓ | insertion ↑ "
             "| ins − del ↑ |", "|---|---|---|---|---|---|---|"]
    for name in summary["means"]["selection"]:
        cells = [f"{summary['means'][h][name][c]['mean']:.4f}" for h in ("selection", "confirmation")
                 for c in CRITERIA]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Variant and rival chosen on the selection half, compared on the confirmation half (paired; "
              "positive favours the CAAP map; 95 % bootstrap interval; Wilcoxon p):", "",
              "| criterion | chosen variant | chosen rival | comparison | difference | 95 % interval | p | n |",
              "|---|---|---|---|---|---|---|---|"]
    for criterion, c in summary["chosen"].items():
        for name, d in c["favouring_caap"].items():
            lines.append(f"| {criterion} | {c['variant']} | {c['rival']} | {name} | {d['mean']:+.4f} | "
                         f"[{d['low']:+.4f}, {d['high']:+.4f}] | {d['p']:.3g} | {d['n']} |")
    if summary.get("gae_vs_reference_max_abs_diff") is not None:
        lines += ["", f"GAE scored here and in the reference run: largest difference "
                  f"{summary['gae_vs_reference_max_abs_diff']:.2g}."]
    return "\n".join(lines) + "\n"


def read_reference(run: Path, indices: list[int]) -> dict[int, dict]:
    """Every method's deletion / insertion per image from a `caap bench` run with the same metric specs
    (exact ``caap`` as ``caap_exact``; CAAP's other modes left out)."""
    out: dict[int, dict] = {}
    for path in sorted((run / "records").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec["index"] not in indices or rec["method"] in ("caap_fast", "caap_adaptive"):
            continue
        if all(spec in rec["metrics"] for spec in METRICS.values()):
            name = "caap_exact" if rec["method"] == "caap" else rec["method"]
            out.setdefault(rec["index"], {})[name] = {k: rec["metrics"][spec] for k, spec in METRICS.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reference", type=Path, default=None,
                        help="a caap bench run folder (same metrics) whose methods join as rivals and exact CAAP")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, data, indices = real_deit_tiny(args.every, args.limit)
    explainers = {name: CAAP(model, layers=band, context=context, mode="fast")
                  for name, (context, band) in SINGLE.items()}
    explainers["gae"] = methods.build("gae", model)
    metrics = {name: build(spec) for name, spec in METRICS.items()}
    records = resumable(data, indices, args.out / "records",
                        lambda item: record(model, item.image[None], item.label, explainers, metrics))
    reference = read_reference(args.reference, indices) if args.reference else {}
    settings = {"model": "deit_tiny_patch16_224 (real)", "every": args.every, "limit": args.limit, "metrics": METRICS,
                "reference": str(args.reference) if args.reference else None, "torch": torch.__version__}
    summary = summarize(records, indices, reference)
    save_json(args.out / "summary.json", {"settings": settings, **summary})
    atomic_write_bytes(args.out / "summary.md", markdown(summary, settings).encode())
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
