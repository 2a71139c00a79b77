"""The benchmark runner: every (image, method) is explained once, every metric scored, each record
written atomically as soon as it exists. Re-running on the same folder skips finished records, so a run
killed at any moment and resumed ends with the same results as an uninterrupted one. Under ``torchrun``
the images are sharded across ranks (``torch.distributed``, gloo on CPU / nccl on CUDA); rank 0 waits for
all ranks and writes the table.

Layout of ``RUN_DIR`` (:class:`caap.bench.store.RunStore`): ``config.json`` (the settings; a resume with
other data, model or metrics is refused, one with other methods adds them: the table lists
every method the folder holds), ``records/<index>_<method>.json`` (target, label, seconds, metric scores, the method's
scalar metadata such as CAAP's patched runs), ``maps/<index>_<method>.npy``, ``table.{md,csv,json}``,
``plots/`` (curves, example maps) and ``report.html``.
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
from tqdm.auto import tqdm

from caap.adapters import adapt, create_model, model_transform
from caap.bench import provenance
from caap.bench.report import curve_plots, example_grid, write_html
from caap.bench.store import RunStore
from caap.bench.table import summarize
from caap.core.state import eval_mode
from caap.data.datasets import ImageFolder, Subset, Synthetic
from caap.data.grid import GridPointing
from caap.errors import CaapError
from caap.io import save_json, save_npy
from caap.methods import METHODS
from caap.metrics import METRICS, CurveMetric, Metric


@dataclass
class BenchConfig:
    model: str
    data: str
    methods: list[str]
    metrics: list[str]
    weights: str | None = None
    masks: str | None = None
    limit: int | None = None
    every: int = 1
    target: str = "auto"  # "label", "pred", or "auto": the label where the image has one, else the prediction
    labels: str | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "weights": self.weights, "data": self.data, "masks": self.masks,
                "labels": self.labels, "limit": self.limit, "every": self.every, "target": self.target,
                "methods": self.methods, "metrics": self.metrics, "device": self.device, "dtype": self.dtype,
                "batch_size": self.batch_size, **self.extra}

    def method_options(self, spec: str) -> dict:
        """The run-wide options a method takes: ``device``, ``dtype``, ``batch_size`` where it has one."""
        accepted = set(METHODS.get(spec).options())
        options = {"device": self.device, "dtype": self.dtype, "batch_size": self.batch_size}
        return {k: v for k, v in options.items() if v is not None and k in accepted}


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if world > 1:
        return torch.distributed.get_rank(), world
    return 0, 1


def run(config: BenchConfig, out: str | Path, progress: bool = True, rescore: bool = False,
        report: bool = True, loaded: tuple | None = None, allow_code_change: bool = False) -> dict | None:
    """Run (or resume) the benchmark into ``out``; returns the table on rank 0 (None on other ranks).

    ``rescore``: recompute every metric of the finished records from their saved maps (after a metric's
    definition changed), keeping the maps, targets and timings; the explanations are not recomputed.
    ``report``: write the plots and ``report.html`` besides the table. ``loaded``: the ``(model, dataset)``
    of :func:`load`, when the caller already has them. ``allow_code_change``: resume a run that other code
    started (refused by default; :func:`caap.bench.provenance.check_resume`)."""
    store = RunStore(out)
    if config.target not in ("auto", "label", "pred"):
        raise CaapError(f"--target {config.target!r}: expected auto, label or pred")
    if not config.methods:
        raise CaapError("--methods is empty; expected e.g. caap,rollout,gae")
    if not config.metrics:
        raise CaapError("--metrics is empty; expected e.g. deletion,insertion")
    for spec in config.methods:
        METHODS.get(spec)
    metric_objs = {spec: METRICS.build(spec) for spec in config.metrics}
    # everything is checked (model, data, what the metrics need) before the run folder is written
    model, dataset = loaded if loaded is not None else load(config)
    needy = [spec for spec, metric in metric_objs.items() if metric.needs_masks]
    if needy and not getattr(dataset, "has_masks", False):
        raise CaapError(f"metric {needy[0]!r} needs ground-truth masks, and --data {config.data!r} has none "
                        "(give --masks FOLDER, or use --data synthetic[:variant])")
    explainers = {spec: METHODS.build(spec, model, **config.method_options(spec)) for spec in config.methods}
    rank, world = _dist()
    settings = config.to_dict()
    device = next(iter(explainers.values())).device
    now = provenance.record(device)
    history = provenance.check_resume((store.stored() or {}).get("info"), now, allow_code_change)
    stored = settings
    if rank == 0:
        stored = store.open(settings, growing=("methods",), info={
            **now, "code_history": history, "device": str(device),
            "method_settings": {spec: e.settings() for spec, e in explainers.items()}})
    mine = [i for i in range(len(dataset)) if i % world == rank]
    todo = [(i, m) for i in mine for m in config.methods if not store.done(i, m)]
    bar = tqdm(total=len(todo), desc=f"bench[{rank}]", unit="map", disable=not progress)
    current, item = None, None
    for i, name in todo:
        if current != i:
            item, current = dataset[i], i
        x = item.image[None]
        start = time.perf_counter()
        use_label = config.target == "label" or (config.target == "auto" and item.label >= 0)
        att = explainers[name].explain(x, target=[item.label] if use_label else None, progress=False)
        seconds = time.perf_counter() - start
        prediction = int(att.meta["prediction"][0])
        scores, curves = _score(_bound(metric_objs, name), model, x, att.target, att.scores, item.mask)
        save_npy(store.map_path(i, name), att.scores[0].numpy())
        save_json(store.record_path(i, name), {
            "index": i, "id": item.id, "method": name, "label": item.label, "target": int(att.target[0]),
            "prediction": prediction, "seconds": seconds, "metrics": scores, "curves": curves,
            "meta": {k: v for k, v in att.meta.items() if _plain(v) and k != "seconds"}})
        bar.update(1)
    bar.close()
    if rescore:
        fresh = set(todo)  # just computed with the current metrics
        done = [(i, m) for i in mine for m in config.methods if (i, m) not in fresh]
        for i, name in tqdm(done, desc=f"rescore[{rank}]", unit="map", disable=not progress):
            path = store.record_path(i, name)
            record = json.loads(path.read_text())
            item = dataset[i]
            saved = torch.from_numpy(np.load(store.map_path(i, name)))[None]
            target = torch.tensor([record["target"]])
            record["metrics"], record["curves"] = _score(_bound(metric_objs, name), model, item.image[None], target,
                                                         saved, item.mask)
            save_json(path, record)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        return None
    # the table lists every method the folder holds, also those of earlier calls of this run
    methods = [m for m in stored.get("methods", config.methods) if any(store.done(i, m) for i in range(len(dataset)))]
    table = summarize(store, methods, config.metrics, num_classes=adapt(model).num_classes)
    if table.get("warning"):
        print(f"caap: warning: {table['warning']}", file=sys.stderr)
    if report:
        plots = curve_plots(store, methods)
        grid = example_grid(store, dataset, methods)
        write_html(store.root, table, settings, plots + ([grid] if grid else []))
    return table


def _bound(metric_objs: dict[str, Metric], spec: str) -> dict[str, Metric]:
    """The metrics for method ``spec``: a metric that re-explains (model randomisation) gets that method."""
    def explain(model, images, targets):
        return METHODS.build(spec, model).explain(images, target=targets, progress=False).scores

    return {name: (m.bind(explain) if getattr(m, "needs_explain", False) else m) for name, m in metric_objs.items()}


def _score(metric_objs: dict, model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
           mask: torch.Tensor | None) -> tuple[dict, dict]:
    """Every metric of one map ``[1, h, w]`` (curve metrics keep their curve for the report's plots)."""
    mask = None if mask is None else mask[None]
    scores, curves = {}, {}
    for metric_name, metric in metric_objs.items():
        if metric.needs_masks and mask is None:
            continue
        if isinstance(metric, CurveMetric):
            values, fractions = metric.curve(model, x, target, maps)
            scores[metric_name] = float(metric.area(values, fractions)[0])
            curves[metric_name] = {"x": fractions.tolist(), "y": values[0].tolist()}
        else:
            scores[metric_name] = float(metric(model, x, target, maps, mask)[0])
    return scores, curves


def _plain(value) -> bool:
    """A JSON scalar or a list of them (settings and counts from an Attribution's metadata)."""
    scalar = (bool, int, float, str)
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


def load(config: BenchConfig):
    """``(model, dataset)`` of a run: the model by name (:func:`caap.adapters.create_model`) and the
    ``--data`` images after ``every`` and ``limit``."""
    from caap.bench.explain import vit_method

    model = create_model(config.model, config.weights, needs_vit=vit_method(config.methods))
    if config.data.startswith("synthetic"):
        variant = config.data.split(":", 1)[1] if ":" in config.data else "simple"
        dataset = Synthetic(variant, size=config.limit * config.every if config.limit else 200)
    elif config.data.startswith("grid:"):
        dataset = grid_dataset(config, model)
    else:
        dataset = ImageFolder(config.data, model_transform(model), config.masks,
                              labels=config.labels, need_labels=config.target == "label")
    return model, Subset(dataset, range(0, len(dataset), config.every)[:config.limit])


def grid_dataset(config: BenchConfig, model) -> GridPointing:
    """``grid:DIR[:threshold=P][:seed=S]``: the grid pointing game built from the labelled images in DIR
    (:mod:`caap.data.grid`), cells kept where the model is right and confident at the cell's scale."""
    from caap.specs import parse

    spec = parse(config.data, "data")
    if len(spec.args) != 1:
        raise CaapError(f"--data {config.data!r}: expected grid:DIR[:threshold=P][:seed=S]")
    unknown = set(spec.options) - {"threshold", "seed"}
    if unknown:
        raise CaapError(f"--data {config.data!r}: unknown option {sorted(unknown)[0]!r}; expected threshold, seed")
    adapter = adapt(model)
    folder = ImageFolder(str(spec.args[0]), model_transform(model), labels=config.labels, need_labels=True)
    device = next(adapter.model.parameters()).device

    def classify(images: torch.Tensor) -> torch.Tensor:
        return adapter.forward(images.to(device)).float().softmax(-1).cpu()

    with eval_mode(adapter.model):
        return GridPointing(folder, classify, **spec.options)
