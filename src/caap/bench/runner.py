"""The benchmark runner: every (image, method) is explained once, every metric scored, each record
written atomically as soon as it exists. Re-running on the same folder skips finished records, so a run
killed at any moment and resumed ends with the same results as an uninterrupted one. Under ``torchrun``
the images are sharded across ranks (``torch.distributed``, gloo on CPU / nccl on CUDA); rank 0 waits for
all ranks and writes the table.

Layout of ``RUN_DIR`` (:class:`caap.bench.store.RunStore`): ``config.json`` (the settings, the code and machine;
a resume with other data, model, metrics or code is refused, one with other methods adds them: the table lists
every method the folder holds), ``records/<index>_<method>.json`` (target, label, seconds, metric scores, the
method's scalar metadata such as CAAP's patched runs), ``maps/<index>_<method>.npy``, ``table.{md,csv,json}``,
``scores.csv``, ``plots/`` (curves, example maps) and ``report.html``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from caap.adapters import adapt, classifier, create_model, model_transform
from caap.bench import provenance
from caap.bench.options import DataSpec, MethodSpec, RunOptions, method_specs
from caap.bench.report import curve_plots, example_grid, write_html
from caap.bench.store import RunStore
from caap.bench.table import summarize
from caap.core.state import eval_mode
from caap.data.datasets import Dataset, ImageFolder, Item, Subset, Synthetic
from caap.data.grid import GridPointing
from caap.errors import CaapError, OptionError
from caap.io import save_json, save_npy
from caap.methods import Explainer
from caap.metrics import METRICS, Metric
from caap.metrics.road import share_solves


@dataclass(kw_only=True)
class BenchConfig(RunOptions):
    """A bench run: the run-wide options (:class:`~caap.bench.options.RunOptions`), the methods (spec strings or
    :class:`~caap.bench.options.MethodSpec` objects) and the metric specs."""

    methods: list[str | MethodSpec]
    metrics: list[str]
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The settings ``config.json`` records (methods by their labels)."""
        return {**self.run_options(), "methods": [m.label for m in method_specs(self.methods)],
                "metrics": list(self.metrics), **self.extra}


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if world > 1:
        return torch.distributed.get_rank(), world
    return 0, 1


def run(config: BenchConfig, out: str | Path, progress: bool = True, rescore: bool = False,
        report: bool = True, loaded: tuple | None = None, allow_code_change: bool = False,
        score_batch: int = 1) -> dict | None:
    """Run (or resume) the benchmark into ``out``; returns the table on rank 0 (None on other ranks).

    ``rescore``: recompute every metric of the finished records from their saved maps (after a metric's
    definition changed), keeping the maps, targets and timings; the explanations are not recomputed.
    ``report``: write the plots and ``report.html`` besides the table. ``loaded``: the ``(model, dataset)``
    of :func:`load`, when the caller already has them. ``allow_code_change``: resume a run that other code
    started (refused by default; :func:`caap.bench.provenance.check_resume`). ``score_batch``: maps scored together
    (every metric once over them, its forwards batched across methods and images; 1: each map alone)."""
    if isinstance(score_batch, bool) or not isinstance(score_batch, int) or score_batch < 1:
        raise OptionError("score_batch", f"{score_batch!r}: expected a positive number of maps")
    methods, metrics = _checked(config)  # everything is checked before the run folder is written
    model, dataset = loaded if loaded is not None else load(config, methods)
    _check_masks(metrics, dataset, config)
    explainers = {m.label: m.build(model, config) for m in methods}
    specs = {m.label: m for m in methods}
    rank, world = _dist()
    store = RunStore(out)
    stored = _open(store, config, explainers, allow_code_change, rank, score_batch)
    mine = [i for i in range(len(dataset)) if i % world == rank]
    bound = {label: _bound(metrics, spec, config) for label, spec in specs.items()}
    fresh = _explain_and_score(store, dataset, explainers, bound, config, model, mine, rank, progress,
                               score_batch)
    if rescore:
        _rescore(store, dataset, bound, model, mine, fresh, rank, progress)
    if world > 1:
        torch.distributed.barrier()
    return _finish(store, stored, dataset, config, model, report) if rank == 0 else None


def _checked(config: BenchConfig) -> tuple[list[MethodSpec], dict[str, Metric]]:
    config.check()
    methods = method_specs(config.methods)
    if not config.metrics:
        raise OptionError("metrics", "is empty; expected e.g. deletion,insertion")
    metrics = {spec: METRICS.build(spec) for spec in config.metrics}
    share_solves(metrics.values())  # ROAD's three metrics on one batch: one set of imputations
    return methods, metrics


def _check_masks(metrics: dict[str, Metric], dataset: Dataset, config: BenchConfig) -> None:
    needy = [spec for spec, metric in metrics.items() if metric.needs_masks]
    if needy and not dataset.has_masks:
        raise OptionError("masks", f"are needed: metric {needy[0]!r} needs ground-truth masks, and the data "
                                   f"{config.data!r} has none (give a folder of masks, or use synthetic[:variant] "
                                   "data)")


def _open(store: RunStore, config: BenchConfig, explainers: dict[str, Explainer], allow_code_change: bool,
          rank: int, score_batch: int = 1) -> dict:
    """Start or resume the run folder (rank 0): the settings, the code and machine it runs on (a resume with
    other code is refused unless allowed), the sha256 of a weights file (a resume with other weights at the same
    path is refused), the last call's ``score_batch`` and every method's resolved settings."""
    settings = config.to_dict()
    device = next(iter(explainers.values())).device
    now = provenance.record(device)
    previous = (store.stored() or {}).get("info")
    history = provenance.check_resume(previous, now, allow_code_change)
    weights = provenance.file_hash(config.weights)
    recorded = (previous or {}).get("weights_sha256")
    if recorded not in (None, weights):
        raise CaapError(f"the run was started with other weights at {config.weights!r} (sha256 "
                        f"{previous['weights_sha256'][:12]}…, now {str(weights)[:12]}…): its records would mix two "
                        "models; use another folder")
    if previous is not None and recorded is None and weights is not None and not allow_code_change:
        raise CaapError(f"the run's config.json records no sha256 of its weights (started by older caap), so "
                        f"{config.weights!r} cannot be checked to be the same model; resume with allow_code_change "
                        "to adopt these weights (their sha256 is then recorded), or use another folder")
    if rank != 0:
        return settings
    return store.open(settings, growing=("methods",), info={
        **now, "code_history": history, "device": str(device), "weights_sha256": weights, "score_batch": score_batch,
        "num_classes": next(iter(explainers.values())).adapter.num_classes,
        "method_settings": {label: e.settings() for label, e in explainers.items()}})


def _target(config: BenchConfig, item: Item) -> list[int] | None:
    use_label = config.target == "label" or (config.target == "auto" and item.label >= 0)
    return [item.label] if use_label else None


def _explain_and_score(store: RunStore, dataset: Dataset, explainers: dict[str, Explainer],
                       bound: dict[str, dict[str, Metric]], config: BenchConfig, model, mine: list[int], rank: int,
                       progress: bool, score_batch: int = 1) -> set[tuple[int, str]]:
    """Every unfinished (image, method) of this rank: explained, scored and written (map, then record).

    ``score_batch`` maps (of consecutive methods and images) are scored together: each metric runs once over all
    of them, so its forwards batch across methods and images (what keeps an accelerator busy; on a CPU the gain is
    small). The default, 1, scores each map alone. Records are written as soon as their batch is scored; an
    interrupted batch is redone on resume."""
    todo = [(i, m) for i in mine for m in explainers if not store.done(i, m)]
    entries: list[_Entry] = []
    current, item = None, None
    for n, (i, label) in enumerate(tqdm(todo, desc=f"bench[{rank}]", unit="map", disable=not progress)):
        if current != i:
            item, current = dataset[i], i
        x = item.image[None]
        start = time.perf_counter()
        att = explainers[label].explain(x, target=_target(config, item), progress=False)
        entries.append(_Entry(i, label, item, x, att.target, att.scores, time.perf_counter() - start, att))
        if len(entries) < score_batch and n + 1 < len(todo):
            continue
        for entry, (scores, curves) in zip(entries, _score(bound, model, entries), strict=True):
            att = entry.att
            save_npy(store.map_path(entry.index, entry.label), att.scores[0].numpy())
            save_json(store.record_path(entry.index, entry.label), {
                "index": entry.index, "id": entry.item.id, "method": entry.label, "label": entry.item.label,
                "target": int(att.target[0]), "prediction": int(att.meta["prediction"][0]), "seconds": entry.seconds,
                "metrics": scores, "curves": curves,
                "meta": {k: v for k, v in att.meta.items() if _plain(v) and k != "seconds"}})
        entries = []
    return set(todo)


@dataclass
class _Entry:
    """One map to score: image ``index`` (its ``item`` and batch ``x`` ``[1, 3, H, W]``), method ``label``, the
    ``target`` ``[1]`` and ``maps`` ``[1, h, w]``; ``seconds`` and ``att`` (the Attribution) when just explained."""

    index: int
    label: str
    item: Item
    x: torch.Tensor
    target: torch.Tensor
    maps: torch.Tensor
    seconds: float = 0.0
    att: object = None


def _rescore(store: RunStore, dataset: Dataset, bound: dict[str, dict[str, Metric]], model, mine: list[int],
             fresh: set, rank: int, progress: bool) -> None:
    """Recompute the metrics of the records this call did not just write, from their saved maps."""
    done = [(i, m) for i in mine for m in bound if (i, m) not in fresh]
    for i, label in tqdm(done, desc=f"rescore[{rank}]", unit="map", disable=not progress):
        path = store.record_path(i, label)
        record = json.loads(path.read_text())
        item = dataset[i]
        saved = torch.from_numpy(np.load(store.map_path(i, label)))[None]
        entry = _Entry(i, label, item, item.image[None], torch.tensor([record["target"]]), saved)
        [(record["metrics"], record["curves"])] = _score(bound, model, [entry])
        save_json(path, record)


def _finish(store: RunStore, stored: dict, dataset: Dataset, config: BenchConfig, model, report: bool) -> dict:
    """The table of every method the folder holds (also those of earlier calls of this run) and the report."""
    methods = [m for m in stored.get("methods", []) if any(store.done(i, m) for i in range(len(dataset)))]
    table = summarize(store, methods, config.metrics, num_classes=adapt(model).num_classes)
    if table.get("warning"):
        print(f"caap: warning: {table['warning']}", file=sys.stderr)
    if report:
        plots = curve_plots(store, methods)
        grid = example_grid(store, dataset, methods)
        write_html(store.root, table, stored, plots + ([grid] if grid else []))
    return table


def _bound(metrics: dict[str, Metric], spec: MethodSpec, config: BenchConfig) -> dict[str, Metric]:
    """The metrics for method ``spec``: a metric that re-explains (the randomisation check) gets that method,
    built with the run's options (device, dtype, batch size)."""
    def explain(m, images, targets):
        return spec.build(m, config).explain(images, target=targets, progress=False).scores

    return {name: metric.bind(explain) if metric.needs_explain else metric for name, metric in metrics.items()}


def _score(bound: dict[str, dict[str, Metric]], model, entries: list[_Entry]) -> list[tuple[dict, dict]]:
    """``(scores, curves)`` of every entry: each metric through the metric contract, once over every entry it
    applies to (a metric that re-explains is its method's own; one that needs masks skips entries without one).
    Curve metrics keep their curve for the report's plots."""
    out: list[tuple[dict, dict]] = [({}, {}) for _ in entries]
    batches: dict[tuple[int, ...], tuple] = {}  # the same tensors for the same entries (ROAD shares its solves)
    for name in bound[entries[0].label] if entries else ():
        groups: dict[int, tuple[Metric, list[int]]] = {}
        for k, entry in enumerate(entries):
            metric = bound[entry.label][name]
            if metric.needs_masks and entry.item.mask is None:
                continue
            groups.setdefault(id(metric), (metric, []))[1].append(k)
        for metric, members in groups.values():
            key = tuple(members)
            if key not in batches:
                chosen = [entries[k] for k in members]
                masks = [e.item.mask for e in chosen]
                batches[key] = (torch.cat([e.x for e in chosen]), torch.cat([e.target for e in chosen]),
                                torch.cat([e.maps for e in chosen]),
                                None if any(m is None for m in masks) else torch.stack(masks))
            scored = metric.score(model, *batches[key])
            for row, k in enumerate(members):
                out[k][0][name] = float(scored.values[row])
                if scored.curves is not None:
                    out[k][1][name] = scored.curves[row]
    return out


def _plain(value) -> bool:
    """A JSON scalar or a list of them (settings and counts from an Attribution's metadata)."""
    scalar = (bool, int, float, str)
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


def load(config: RunOptions, methods=()) -> tuple[nn.Module, Dataset]:
    """``(model, dataset)`` of a run: the model by name (:func:`caap.adapters.create_model`; refused at once when it
    is no ViT and a method of ``methods`` needs one) and the data's images after ``every`` and ``limit``."""
    from caap.bench.explain import vit_method

    data = config.check()
    labels = [m.name if isinstance(m, MethodSpec) else m for m in methods]
    model = create_model(config.model, config.weights, needs_vit=vit_method(labels), img_size=config.img_size)
    model = classifier(model, config.model, config.prompts, config.templates)
    if data.kind == "synthetic":
        dataset = Synthetic(data.variant, size=config.limit * config.every if config.limit else 200)
    elif data.kind == "grid":
        dataset = grid_dataset(data, config, model)
    else:
        dataset = ImageFolder(data.path, model_transform(model), config.masks, labels=config.labels,
                              need_labels=config.target == "label")
    subset = Subset(dataset, range(config.offset, len(dataset), config.every)[:config.limit])
    if not len(subset):
        raise OptionError("every", f"{config.every} with offset {config.offset} selects no image of the "
                                   f"{len(dataset)} in {config.data!r}; expected a subset with at least one image")
    if isinstance(dataset, ImageFolder) and config.target != "pred":
        _check_labels(dataset, subset, model, config)
    return model, subset


def _check_labels(folder: ImageFolder, subset: Subset, model: nn.Module, config: RunOptions) -> None:
    """Every label a run would explain names one of the model's classes (a prompt, with ``prompts``): checked on the
    file names (or the labels file) before anything is written."""
    classes = adapt(model).num_classes
    if not classes:
        return
    for i in subset.indices:
        path = folder.files[i]
        label = folder.label(path)
        if label >= classes:
            what = f"the {classes} prompts" if config.prompts else f"the model's {classes} classes"
            source = "the labels file" if config.labels else "its ImageNet WordNet id"
            raise CaapError(f"image {path.name!r} has label {label} (from {source}), which is not one of {what}; "
                            "give a labels file (labels: file,class rows, class a 0-based index"
                            f"{' into the prompts' if config.prompts else ''}) or use target pred")


def grid_dataset(data: DataSpec, config: RunOptions, model) -> GridPointing:
    """The grid pointing game built from the labelled images in ``data.path`` (:mod:`caap.data.grid`), cells kept
    where the model is right and confident at the cell's scale."""
    adapter = adapt(model)
    folder = ImageFolder(data.path, model_transform(model), labels=config.labels, need_labels=True)
    device = next(adapter.model.parameters()).device

    def classify(images: torch.Tensor) -> torch.Tensor:
        return adapter.forward(images.to(device)).float().softmax(-1).cpu()

    with eval_mode(adapter.model):
        return GridPointing(folder, classify, **data.options)
