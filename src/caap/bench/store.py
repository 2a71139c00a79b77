"""The run folder shared by ``caap bench`` and ``caap sweep``: where records and maps live, which are done,
and the resume check of ``config.json``.

Layout: ``config.json`` (what the records mean), ``records/<index>_<spec>.json``, ``maps/<index>_<spec>.npy``.
A record counts as done once both its map and its JSON exist (the JSON is written last, atomically).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from caap.errors import CaapError
from caap.io import save_json
from caap.specs import file_stem


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
        """The stored settings of a started run (``config.json``), or None."""
        found = _read(self.config_path) if self.config_path.is_file() else None
        return found if isinstance(found, dict) else None

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
