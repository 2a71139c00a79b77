"""The benchmark runner: every (image, method) is explained once, every metric scored, each record
written atomically as soon as it exists. Re-running on the same folder skips finished records, so a run
killed at any moment and resumed ends with the same results as an uninterrupted one. Under ``torchrun``
the images are sharded across ranks (``torch.distributed``, gloo on CPU / nccl on CUDA); rank 0 waits for
all ranks and writes the table.

Layout of ``RUN_DIR``: ``config.json`` (the settings; a resume with other data, model or metrics is refused,
one with other methods adds them: the table lists the methods of the last call),
``records/<index>_<method>.json`` (target, label, seconds, metric scores, the method's scalar metadata such
as CAAP's patched runs), ``maps/<index>_<method>.npy``, ``table.{md,csv,json}``, ``plots/`` (curves, example
maps) and ``report.html``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from caap.errors import CaapError
from caap.io import atomic_write_bytes, save_json, save_npy
from caap.specs import file_stem, parse_spec


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
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "weights": self.weights, "data": self.data, "masks": self.masks,
                "limit": self.limit, "every": self.every, "methods": self.methods, "metrics": self.metrics,
                **self.extra}


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if world > 1:
        return torch.distributed.get_rank(), world
    return 0, 1


def run(config: BenchConfig, out: str | Path, progress: bool = True, rescore: bool = False) -> dict | None:
    """Run (or resume) the benchmark into ``out``; returns the table on rank 0 (None on other ranks).

    ``rescore``: recompute every metric of the finished records from their saved maps (after a metric's
    definition changed), keeping the maps, targets and timings; the explanations are not recomputed."""
    from caap import methods as method_registry
    from caap import metrics as metric_registry

    out = Path(out)
    for spec in config.methods:
        method_registry.get(parse_spec(spec, "method")[0])
    metric_objs = {spec: metric_registry.build(spec) for spec in config.metrics}
    rank, world = _dist()
    settings = config.to_dict()
    cfg_path = out / "config.json"
    if rank == 0:
        stored = settings
        if cfg_path.is_file():  # a resume: same data, model and metrics; methods may be added
            previous = json.loads(cfg_path.read_text())
            if {**previous, "methods": None} != json.loads(json.dumps({**settings, "methods": None})):
                raise CaapError(f"{str(out)!r} holds a run with other settings; use another folder to start anew")
            stored = {**settings, "methods": list(dict.fromkeys(previous["methods"] + settings["methods"]))}
        save_json(cfg_path, stored)
    model, dataset = _load(config)
    explainers = {spec: method_registry.build(spec, model) for spec in config.methods}
    mine = [i for i in range(len(dataset)) if i % world == rank]
    todo = [(i, m) for i in mine for m in config.methods if not _done(out, i, m)]
    bar = tqdm(total=len(todo), desc=f"bench[{rank}]", unit="map", disable=not progress)
    current, item = None, None
    for i, name in todo:
        if current != i:
            item, current = dataset[i], i
        x = item.image[None]
        start = time.perf_counter()
        att = explainers[name].explain(x, target=[item.label])
        seconds = time.perf_counter() - start
        scores, curves = _score(metric_objs, model, x, att.target, att.scores, item.mask)
        save_npy(map_path(out, i, name), att.scores[0].numpy())
        save_json(record_path(out, i, name), {
            "index": i, "id": item.id, "method": name, "label": item.label, "target": int(att.target[0]),
            "seconds": seconds, "metrics": scores, "curves": curves,
            "meta": {k: v for k, v in att.meta.items() if _plain(v) and k != "seconds"}})
        bar.update(1)
    bar.close()
    if rescore:
        fresh = set(todo)  # just computed with the current metrics
        done = [(i, m) for i in mine for m in config.methods if (i, m) not in fresh]
        for i, name in tqdm(done, desc=f"rescore[{rank}]", unit="map", disable=not progress):
            path = record_path(out, i, name)
            record = json.loads(path.read_text())
            item = dataset[i]
            saved = torch.from_numpy(np.load(map_path(out, i, name)))[None]
            target = torch.tensor([record["target"]])
            record["metrics"], record["curves"] = _score(metric_objs, model, item.image[None], target, saved,
                                                         item.mask)
            save_json(path, record)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        return None
    table = summarize(out, config)
    from caap.bench.report import curve_plots, example_grid, write_html

    plots = curve_plots(out, config.methods)
    grid = example_grid(out, dataset, config.methods)
    write_html(out, table, settings, plots + ([grid] if grid else []))
    return table


def _score(metric_objs: dict, model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
           mask: torch.Tensor | None) -> tuple[dict, dict]:
    """Every metric of one map ``[1, h, w]`` (curve metrics keep their curve for the report's plots)."""
    mask = None if mask is None else mask[None]
    scores, curves = {}, {}
    for metric_name, metric in metric_objs.items():
        if metric.needs_masks and mask is None:
            continue
        if hasattr(metric, "curve") and hasattr(metric, "area"):
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


def record_path(out: Path, index: int, method: str) -> Path:
    return out / "records" / f"{index:06d}_{file_stem(method)}.json"


def map_path(out: Path, index: int, method: str) -> Path:
    return out / "maps" / f"{index:06d}_{file_stem(method)}.npy"


def _done(out: Path, index: int, method: str) -> bool:
    """A record counts once both its map and its JSON exist (the JSON is written last)."""
    return record_path(out, index, method).is_file() and map_path(out, index, method).is_file()


def _load(config: BenchConfig):
    from timm.data import create_transform, resolve_model_data_config

    from caap.data.datasets import ImageFolder, Subset, Synthetic
    from caap.models import create_model

    model = create_model(config.model, config.weights)
    if config.data.startswith("synthetic"):
        variant = config.data.split(":", 1)[1] if ":" in config.data else "simple"
        dataset = Synthetic(variant, size=config.limit * config.every if config.limit else 200)
    else:
        dataset = ImageFolder(config.data, create_transform(**resolve_model_data_config(model)), config.masks)
    return model, Subset(dataset, range(0, len(dataset), config.every)[:config.limit])


def summarize(out: str | Path, config: BenchConfig) -> dict:
    """Mean ± standard error per method × metric (and seconds per image), written as Markdown, CSV, JSON."""
    from caap import metrics as metric_registry

    out = Path(out)
    values: dict[str, dict[str, list[float]]] = {m: {} for m in config.methods}
    for path in sorted((out / "records").glob("*.json")):
        record = json.loads(path.read_text())
        if record["method"] not in values:
            continue
        cell = values[record["method"]]
        cell.setdefault("seconds", []).append(record["seconds"])
        for name, v in record["metrics"].items():
            cell.setdefault(name, []).append(v)
    columns = [m for m in config.metrics if any(m in values[k] for k in values)] + ["seconds"]
    table = {"columns": columns, "rows": {}, "n": {}}
    for method, cell in values.items():
        table["rows"][method] = {}
        for c in columns:
            v = np.asarray(cell.get(c, []), dtype=np.float64)
            se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
            table["rows"][method][c] = {"mean": float(v.mean()) if len(v) else float("nan"), "se": se, "n": len(v)}
    best = {}
    for c in columns[:-1]:
        direction = metric_registry.get(c).higher_is_better
        means = {m: table["rows"][m][c]["mean"] for m in values if not math.isnan(table["rows"][m][c]["mean"])}
        if means:
            best[c] = (max if direction else min)(means, key=means.get)
    table["best"] = best
    save_json(out / "table.json", table)
    atomic_write_bytes(out / "table.md", _markdown(table, config).encode())
    atomic_write_bytes(out / "table.csv", _csv(table).encode())
    return table


def _markdown(table: dict, config: BenchConfig) -> str:
    from caap import metrics as metric_registry

    arrows = {c: ("↑" if metric_registry.get(c).higher_is_better else "↓") for c in table["columns"][:-1]}
    head = ["method", *[f"{c} {arrows.get(c, '')}".strip() for c in table["columns"][:-1]], "s/img"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in table["rows"].items():
        cells = []
        for c in table["columns"]:
            v = row[c]
            text = f"{v['mean']:.4f} ± {v['se']:.4f}" if c != "seconds" else f"{v['mean']:.2f}"
            cells.append(f"**{text}**" if table["best"].get(c) == method else text)
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines) + "\n"


def _csv(table: dict) -> str:
    rows = ["method,metric,mean,se,n"]
    for method, row in table["rows"].items():
        for c, v in row.items():
            rows.append(f"{method},{c},{v['mean']:.6g},{v['se']:.6g},{v['n']}")
    return "\n".join(rows) + "\n"
