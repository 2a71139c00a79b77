"""The run folder shared by ``caap bench`` and ``caap sweep``: where records and maps live, which are done,
and the resume check of ``config.json``.

Layout: ``config.json`` (what the records mean), ``records/<index>_<spec>.json``, ``maps/<index>_<spec>.npy``.
A record counts as done once both its map and its JSON exist (the JSON is written last, atomically).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caap.errors import CaapError
from caap.io import save_json
from caap.specs import file_stem

OUTCOMES = ("target", "label", "prediction")  # per-image outcomes kept beside the scores
SCORE_COLUMNS = ("image", "id", "method", "metric", "value")


@dataclass(frozen=True)
class RunScores:
    """A run's per-image scores, the one record that tables, verdicts and reports read (:meth:`RunStore.scores`):
    ``values[method][metric spec][image id]`` (``"seconds"`` among the metrics), ``outcomes[image id] =
    (prediction, label)``, and the run's ``config`` (``config.json``; empty when there is none)."""

    name: str
    config: dict
    values: dict[str, dict[str, dict[str, float]]]
    outcomes: dict[str, tuple[int, int]]

    def ids(self) -> set[str]:
        """Every image id that has a score in the run."""
        return {i for specs in self.values.values() for per in specs.values() for i in per}


class RunStore:
    """A run folder. ``fixed`` settings must match on a resume; ``growing`` ones (lists) may gain entries,
    and the stored lists keep every entry ever run (in order). ``info`` (versions, device, each method's
    resolved settings) is recorded under ``"info"`` and never compared."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    def record_path(self, index: int, spec: str) -> Path:
        return self.root / "records" / f"{index:06d}_{file_stem(spec)}.json"

    def map_path(self, index: int, spec: str) -> Path:
        return self.root / "maps" / f"{index:06d}_{file_stem(spec)}.npy"

    def stored(self) -> dict | None:
        """The stored settings of a started run (``config.json``), or None; a file whose fields have the wrong
        JSON types (a hand edit) is refused with one line naming the field."""
        found = _read(self.config_path) if self.config_path.is_file() else None
        if not isinstance(found, dict):
            return None
        check_shape(found, str(self.config_path))
        return found

    def done(self, index: int, spec: str) -> bool:
        """Both files exist and read (a corrupt record or map is recomputed)."""
        path, map_path = self.record_path(index, spec), self.map_path(index, spec)
        return path.is_file() and map_path.is_file() and _read(path) is not None and _map_ok(map_path)

    def record(self, index: int, spec: str) -> dict | None:
        """The record of ``(index, spec)``, or None when it is missing or unreadable."""
        path = self.record_path(index, spec)
        return _read(path) if path.is_file() else None

    def load_map(self, index: int, spec: str) -> np.ndarray:
        """The saved map of ``(index, spec)`` (``[h, w]``)."""
        return np.load(self.map_path(index, spec))

    def scores(self) -> RunScores:
        """The run's per-image scores (:class:`RunScores`): from its records, or from ``scores.csv`` in a folder of
        shipped evidence that keeps only that file and ``config.json``."""
        values: dict[str, dict[str, dict[str, float]]] = {}
        outcomes: dict[str, dict[str, int]] = {}
        if (self.root / "scores.csv").is_file() and not (self.root / "records").is_dir():
            rows = _score_rows(self.root / "scores.csv")
        elif (self.root / "records").is_dir():
            rows = ((r["index"], r.get("id") or f"{r['index']:06d}", r["method"], k, v) for r in self.records()
                    for k, v in {**r["metrics"], "seconds": r["seconds"], **{o: r[o] for o in OUTCOMES if o in r}}
                    .items())
        else:
            raise CaapError(f"{str(self.root)!r} is not a run folder: expected records/ (caap bench) or scores.csv")
        for _, image, method, metric, value in rows:
            if metric in OUTCOMES:
                outcomes.setdefault(image, {})[metric] = int(value)
            else:
                values.setdefault(method, {}).setdefault(metric, {})[image] = float(value)
        return RunScores(self.root.name, self.stored() or {}, values,
                         {i: (o.get("prediction", -1), o.get("label", -1)) for i, o in outcomes.items()})

    def by_method(self, methods: list[str]) -> dict[str, dict[int, dict]]:
        """``{method: {image index: record}}`` for ``methods``, in one read of the records."""
        out: dict[str, dict[int, dict]] = {m: {} for m in methods}
        for record in self.records():
            if record.get("method") in out:
                out[record["method"]][record["index"]] = record
        return out

    def records(self) -> Iterator[dict]:
        """Every readable record in the folder, in file order (a corrupt one is skipped: it is not done)."""
        for path in sorted((self.root / "records").glob("*.json")):
            record = _read(path)
            if record is not None:
                yield record

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock on the run folder (``.lock``), so that concurrent starts and resumes of the same
        folder update ``config.json`` one after the other."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def open(self, settings: dict, growing: tuple[str, ...] = (), info: dict | None = None) -> dict:
        """Start or resume: write ``config.json`` for a new run; for a resume, refuse other ``fixed`` settings
        and store the union of the ``growing`` lists. Returns the stored settings."""
        with self.locked():
            return self._open(settings, growing, info or {})

    def _open(self, settings: dict, growing: tuple[str, ...], info: dict) -> dict:
        settings = json.loads(json.dumps(settings))  # JSON's view of the values, as they will be stored
        stored = settings
        if self.config_path.is_file():
            previous = _read(self.config_path)
            if not isinstance(previous, dict):
                raise CaapError(f"{str(self.config_path)!r} is corrupt (not a JSON object of run settings); "
                                "delete it to start this run anew, or use another folder")
            check_shape(previous, str(self.config_path))
            fixed_now = {k: v for k, v in settings.items() if k not in growing}
            fixed_then = {k: v for k, v in previous.items() if k not in growing and k != "info"}
            if fixed_now != fixed_then:
                key = next(k for k in sorted(set(fixed_now) | set(fixed_then)) if fixed_now.get(k) != fixed_then.get(k))
                raise CaapError(
                    f"{str(self.root)!r} holds a run with other settings (other data, model or metrics: {key} is "
                    f"{fixed_then.get(key)!r} there, {fixed_now.get(key)!r} now); use another folder to start anew")
            stored = {**settings, **{k: list(dict.fromkeys(previous.get(k, []) + settings[k])) for k in growing}}
            old = previous.get("info") or {}
            info = {**old, **info, **({"method_settings": {**old.get("method_settings", {}),
                                                           **info.get("method_settings", {})}} if info else {})}
        if info:
            stored = {**stored, "info": json.loads(json.dumps(info, default=str))}
        save_json(self.config_path, stored)
        return stored


# The JSON types of config.json's fields that code reads by structure (other fields are compared as values).
SHAPE: dict[str, tuple[type, ...]] = {"methods": (list,), "metrics": (list,), "info": (dict,)}
INFO_SHAPE: dict[str, tuple[type, ...]] = {"code": (dict,), "code_history": (list,),
                                           "weights_sha256": (str, type(None)), "method_settings": (dict,),
                                           "versions": (dict,), "machine": (dict,)}
_JSON_NAMES = {list: "a list", dict: "an object", str: "a string", type(None): "null", int: "a number",
               float: "a number", bool: "true or false"}


def check_shape(stored: dict, where: str) -> None:
    """Refuse a ``config.json`` whose structural fields have other JSON types than caap writes (a hand edit such as
    ``"methods": "rollout"`` or ``"info": [1, 2]``), naming the field, what it holds and what was expected."""
    def refuse(field: str, value, expected: tuple[type, ...]) -> None:
        got = _JSON_NAMES.get(type(value), type(value).__name__)
        want = " or ".join(dict.fromkeys(_JSON_NAMES[t] for t in expected))
        raise CaapError(f"{where!r}: field {field!r} is {got} ({json.dumps(value)[:40]}), expected {want}; the file "
                        "was edited by hand: restore it, or use another folder")

    for key, expected in SHAPE.items():
        if key in stored and not isinstance(stored[key], expected):
            refuse(key, stored[key], expected)
        if key != "info" and isinstance(stored.get(key), list):
            for item in stored[key]:
                if not isinstance(item, (str, dict)):
                    refuse(f"{key}[…]", item, (str,))
    for key, expected in INFO_SHAPE.items():
        info = stored.get("info") or {}
        if key in info and not isinstance(info[key], expected):
            refuse(f"info.{key}", info[key], expected)
    for item in (stored.get("info") or {}).get("code_history") or []:
        if not isinstance(item, dict):
            refuse("info.code_history[…]", item, (dict,))


def _score_rows(path: Path) -> Iterator[tuple[int, str, str, str, float]]:
    """The rows of a ``scores.csv`` (``image, id, method, metric, value``), checked."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != SCORE_COLUMNS:
            raise CaapError(f"{str(path)!r} is not a scores file: header {header}, expected {SCORE_COLUMNS}")
        for n, row in enumerate(reader, 2):
            try:
                image, ident, method, metric, value = row
                yield int(image), ident or f"{int(image):06d}", method, metric, float(value)
            except ValueError:
                raise CaapError(f"{str(path)!r}, line {n}: expected {','.join(SCORE_COLUMNS)}, got {row}") from None


def _map_ok(path: Path) -> bool:
    try:
        np.load(path)
    except (OSError, ValueError, EOFError):
        return False
    return True


def _read(path: Path):
    """A JSON file's content, or ``None`` when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
