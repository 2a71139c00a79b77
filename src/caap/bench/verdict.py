"""Verdicts for any method: does it beat every other method of the runs, on every canvas, after Holm?

    v = verdict([RunStore("runs/deit-top").scores()], "caap", family=("caap", "caap_fast", "caap_adaptive"))
    v.rows[0].verdict                    # "holds" | "tie" | "does not hold"
    print(v.markdown()); v.to_json()     # the table; {"rows": [{"metric", "verdict", "canvases": [...]}], ...}

The rule (docs/EVALUATION.md, :mod:`caap.bench.stats`): a **row** is one metric (its spec without the canvas);
its **canvases** are the specs of that metric that differ only in the canvas the metric itself reports
(deletion on the mean and on the blurred canvas). The method is compared with every **rival** — every other
method of the runs, except those of its own ``family`` (its other modes and settings) — on every canvas, each
comparison a paired test over the images (bootstrap of the mean difference; exact McNemar for a binary metric),
Holm-corrected over all the row's comparisons (rivals × canvases). **holds**: better in every comparison; **does
not hold**: some rival is better on some canvas; **tie** otherwise. Each canvas names its decisive rival (the one
that beats the method by the most; where it holds, the closest; where it ties, the tied rival with the best mean),
the difference favouring the method with its interval at the level of its Holm step, and the Holm-adjusted p.

Several runs are joined **by image id** (the file name): a method run on some images is judged against
baselines of another run on the same images. Images that are not in every run are named and left out
(:attr:`Verdict.left_out`), never paired by position.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from caap.bench import stats
from caap.bench.store import RunScores
from caap.errors import CaapError, OptionError
from caap.metrics import METRICS
from caap.specs import parse

FORMAT = "caap verdict 1"  # the ``format`` of the JSON file (an existing file is only replaced when it has it)


@dataclass(frozen=True)
class Canvas:
    """One canvas of a row: the metric ``spec``, its ``canvas`` (None for a metric without one), the verdict on
    this canvas alone, the decisive ``rival`` and the comparison with it (``mean``, ``low``, ``high``: the
    difference favouring the method and its Holm-level interval, NaN for a binary metric; ``b``/``c``: the
    discordant images of a binary metric; ``p_adj``; ``n``), the method's and the rival's means, the method's
    rank by mean among ``methods`` and the rivals it ties."""

    spec: str
    canvas: str | None
    verdict: str
    rival: str
    mean: float
    low: float
    high: float
    p_adj: float
    n: int
    value: float
    rival_value: float
    rank: int
    methods: int
    tied: tuple[str, ...]
    discordant: tuple[int, int] | None = None
    comparison: Mapping = field(default_factory=dict, repr=False)  # the test's full record (caap.bench.stats)

    def difference(self) -> str:
        """``+0.012 [+0.004, +0.020]`` or, for a binary metric, ``+0.046, 1:6 discordant``."""
        if self.discordant is not None:
            return f"{self.mean:+.3f}, {self.discordant[0]}:{self.discordant[1]} discordant"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


@dataclass(frozen=True)
class Row:
    """One metric: its verdict over every canvas, the canvases, and the size of its Holm family."""

    metric: str
    higher_is_better: bool
    verdict: str
    canvases: tuple[Canvas, ...]
    comparisons: int


@dataclass(frozen=True)
class Verdict:
    """The verdict of ``method`` on every row, with what it was judged on."""

    method: str
    family: tuple[str, ...]
    runs: tuple[str, ...]
    images: int
    left_out: Mapping[str, tuple[str, ...]]
    rivals: tuple[str, ...]
    rows: tuple[Row, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        """The JSON form (NaN as null): ``{"format", "method", "family", "runs", "images", "left_out", "rivals",
        "rows": [{"metric", "verdict", "higher_is_better", "comparisons", "canvases": [{"spec", "verdict",
        "rival", "mean", "low", "high", "p_adj", …}]}]}``."""
        def clean(value):
            return None if isinstance(value, float) and np.isnan(value) else value

        rows = [{"metric": r.metric, "verdict": r.verdict, "higher_is_better": r.higher_is_better,
                 "comparisons": r.comparisons,
                 "canvases": [{k: clean(v) if not isinstance(v, tuple) else list(v) for k, v in vars(c).items()
                               if k != "comparison"} for c in r.canvases]} for r in self.rows]
        return {"format": FORMAT, "method": self.method, "family": list(self.family), "runs": list(self.runs),
                "images": self.images, "left_out": {k: list(v) for k, v in self.left_out.items()},
                "rivals": list(self.rivals), "rows": rows}

    def markdown(self) -> str:
        """The rows as a Markdown table, with what was judged and what was left out above it."""
        plural = "s" if len(self.rivals) != 1 else ""
        lines = [f"`{self.method}` against {len(self.rivals)} rival{plural} ({', '.join(self.rivals)}) on "
                 f"{self.images} images of {', '.join(self.runs)}; family (not rivals): {', '.join(self.family)}.", ""]
        for run, ids in self.left_out.items():
            shown = ", ".join(ids[:5]) + (f", … ({len(ids)} in all)" if len(ids) > 5 else "")
            lines += [f"Left out: {len(ids)} images only in {run} ({shown}).", ""]
        lines += ["| metric | canvas | rank | value | decisive rival (value) | difference favouring the method "
                  "[Holm-level CI] | p (Holm) | n | on this canvas | verdict |", "|" + "---|" * 10]
        for row in self.rows:
            for k, c in enumerate(row.canvases):
                ties = f" (ties: {', '.join(c.tied)})" if c.verdict == "tie" and c.tied else ""
                shown = {"holds": "**holds**", "does not hold": "**does not hold**"}.get(row.verdict, row.verdict)
                lines.append(f"| {row.metric if k == 0 else ''} | {c.canvas or '—'} | {c.rank} of {c.methods} | "
                             f"{c.value:.3f} | {c.rival} ({c.rival_value:.3f}) | {c.difference()} | {c.p_adj:.2g} | "
                             f"{c.n} | {c.verdict}{ties} | {shown if k == 0 else ''} |")
        return "\n".join(lines) + "\n"


def join(runs: Sequence[RunScores]) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, tuple[str, ...]]]:
    """The runs' scores as one ``{method: {metric spec: {image id: value}}}`` over the images every run has, and
    ``{run: ids left out}`` (the images of a run that some other run lacks). A method and metric scored in two runs
    must agree on their common images (the same maps), else the join is refused."""
    if not runs:
        raise OptionError("runs", "are empty; expected one or more run folders")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise CaapError(f"run {next(n for n in names if names.count(n) > 1)!r} is given twice")
    ids = {r.name: r.ids() for r in runs}  # each run's images, read once
    common = set.intersection(*ids.values())
    left_out = {name: tuple(sorted(found - common)) for name, found in ids.items() if found - common}
    if not common:
        raise CaapError(f"the runs {names} share no image id; a verdict pairs the same images")
    joined: dict[str, dict[str, dict[str, float]]] = {}
    source: dict[tuple[str, str], str] = {}
    for run in runs:
        for method, specs in run.values.items():
            for spec, per in specs.items():
                mine = {i: v for i, v in per.items() if i in common}
                before = joined.setdefault(method, {}).get(spec)
                if before is not None and any(before.get(i, v) != v for i, v in mine.items()):
                    raise CaapError(f"{method!r} {spec!r} has other scores in {source[method, spec]!r} and "
                                    f"{run.name!r} on the same images; give one of the two runs")
                joined[method][spec] = {**(before or {}), **mine}
                source.setdefault((method, spec), run.name)
    return joined, left_out


def canvas_of(spec: str) -> tuple[str, str | None]:
    """``(row key, canvas)`` of a metric spec: the metric says whether it has a canvas (its ``canvas`` context);
    the row key is the spec without it (``deletion:step=14:canvas=blur`` -> ``("deletion:step=14", "blur:10")``)."""
    metric = METRICS.build(spec)
    context = getattr(metric, "canvas", None)
    parsed = parse(spec, "metric")
    options = {k: v for k, v in parsed.options.items() if context is None or k != "canvas"}
    key = ":".join([parsed.name, *map(str, parsed.args), *(f"{k}={v}" for k, v in options.items())])
    if context is None:
        return key, None
    shown = context.describe()
    try:  # a context at its default settings by its name alone (blur, not blur:10)
        return key, context.name if type(context)().describe() == shown else shown
    except TypeError:  # a context that needs arguments (a tensor)
        return key, shown


def verdict(runs: Sequence[RunScores], method: str, family: Sequence[str] = (), metrics: Sequence[str] = (),
            seed: int = 0) -> Verdict:
    """The verdict of ``method`` (a method label of the runs, e.g. ``caap`` or ``caap:direction=both``) against
    every other method of ``runs`` (see the module docstring). ``family``: method names (``caap_fast``) or labels
    that are the method's own and not rivals (default: the method's name, so its other settings are never
    rivals); ``metrics``: names or specs to judge (default every metric the method was scored on)."""
    values, left_out = join(runs)
    if method not in values:
        raise OptionError("method", f"{method!r} is not in the runs; expected one of {sorted(values)}")
    own = {method, method.split(":")[0], *family}
    rivals = tuple(m for m in values if m not in own and m.split(":")[0] not in own)
    if not rivals:
        raise CaapError(f"the runs hold no rival of {method!r} outside its family {sorted(own)}")
    specs = [s for s in values[method] if s not in NOT_METRICS and _wanted(s, metrics)]
    if metrics and not specs:
        raise OptionError("metrics", f"{','.join(metrics)!r} names none of {method!r}'s metrics "
                                     f"{sorted(s for s in values[method] if s not in NOT_METRICS)}")
    groups: dict[str, list[tuple[str, str | None]]] = {}
    for spec in specs:
        key, canvas = canvas_of(spec)
        groups.setdefault(key, []).append((spec, canvas))
    rows = tuple(r for r in (_row(values, method, rivals, key, members, seed) for key, members in groups.items())
                 if r is not None)
    images = len(runs[0].ids()) - len(left_out.get(runs[0].name, ()))  # the images every run has
    return Verdict(method, tuple(sorted(own - {method})), tuple(r.name for r in runs), images, left_out, rivals,
                   rows)


NOT_METRICS = ("seconds", "target", "label", "prediction")


def _wanted(spec: str, metrics: Sequence[str]) -> bool:
    return not metrics or spec in metrics or parse(spec, "metric").name in metrics


def _row(values: Mapping, method: str, rivals: Sequence[str], key: str, members: list[tuple[str, str | None]],
         seed: int) -> Row | None:
    metric = METRICS.get(members[0][0])
    higher, binary = metric.higher_is_better, metric.binary
    pairs = {f"{m} @ {s}": (values[method][s], values[m][s]) for s, _ in members for m in rivals
             if values[m].get(s)}
    if not pairs:
        return None
    comparisons = stats.compare_all(pairs, higher, binary, seed)  # one Holm family: every rival on every canvas
    sign = 1 if higher else -1
    canvases = []
    for spec, canvas in members:
        mine = {k.split(" @ ")[0]: c for k, c in comparisons.items() if k.endswith(f" @ {spec}")}
        if not mine:
            continue
        means = {m: float(np.mean(list(values[m][spec].values()))) for m in (method, *rivals) if values[m].get(spec)}
        result, tied = stats.verdict(mine)
        if result == "does not hold":  # the rival that beats the method by the most
            rival = min((k for k, c in mine.items() if c["worse"]), key=lambda k: mine[k]["mean"])
        elif result == "holds":  # the closest rival
            rival = max(mine, key=lambda k: (mine[k]["p_adj"], -mine[k]["mean"]))
        else:  # the tied rival with the best mean
            rival = max(tied, key=lambda k: sign * means[k])
        c = mine[rival]
        canvases.append(Canvas(spec, canvas, result, rival, c["mean"], c["low"], c["high"], c["p_adj"], c["n"],
                               means[method], means[rival], 1 + sum(sign * v > sign * means[method]
                                                                    for v in means.values()),
                               len(means), tuple(tied), (c["b"], c["c"]) if binary else None, c))
    overall, _ = stats.verdict(comparisons)
    return Row(key, higher, overall, tuple(canvases), len(comparisons))


def write_json(result: Verdict, path) -> None:
    """``result.to_json()`` written atomically to ``path``; an existing file is replaced only when it is an earlier
    verdict (its ``format``), never a user's other file."""
    from pathlib import Path

    from caap.io import save_json

    path = Path(path)
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or previous.get("format") != FORMAT:
            raise OptionError("json", f"{str(path)!r} exists and is not an earlier caap verdict; choose another file")
    save_json(path, result.to_json())
