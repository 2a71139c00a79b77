"""The run folder shared by ``caap bench`` and ``caap sweep``: where records and maps live, which are done,
and the resume check of ``config.json``.

Layout: ``config.json`` (what the records mean), ``records/<index>_<spec>.json``, ``maps/<index>_<spec>.npy``.
A record counts as done once both its map and its JSON exist (the JSON is written last, atomically).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from caap.errors import CaapError
from caap.io import save_json
from caap.specs import file_stem


class RunStore:
    """A run folder. ``fixed`` settings must match on a resume; ``growing`` ones (lists) may gain entries,
    and the stored lists keep every entry ever run (in order)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    def record_path(self, index: int, spec: str) -> Path:
        return self.root / "records" / f"{index:06d}_{file_stem(spec)}.json"

    def map_path(self, index: int, spec: str) -> Path:
        return self.root / "maps" / f"{index:06d}_{file_stem(spec)}.npy"

    def done(self, index: int, spec: str) -> bool:
        return self.record_path(index, spec).is_file() and self.map_path(index, spec).is_file()

    def records(self) -> Iterator[dict]:
        """Every record in the folder, in file order."""
        for path in sorted((self.root / "records").glob("*.json")):
            yield json.loads(path.read_text())

    def open(self, settings: dict, growing: tuple[str, ...] = ()) -> dict:
        """Start or resume: write ``config.json`` for a new run; for a resume, refuse other ``fixed`` settings
        and store the union of the ``growing`` lists. Returns the stored settings."""
        settings = json.loads(json.dumps(settings))  # JSON's view of the values, as they will be stored
        stored = settings
        if self.config_path.is_file():
            previous = json.loads(self.config_path.read_text())
            fixed_now = {k: v for k, v in settings.items() if k not in growing}
            fixed_then = {k: v for k, v in previous.items() if k not in growing}
            if fixed_now != fixed_then:
                key = next(k for k in sorted(set(fixed_now) | set(fixed_then)) if fixed_now.get(k) != fixed_then.get(k))
                raise CaapError(
                    f"{str(self.root)!r} holds a run with other settings (other data, model or metrics: {key} is "
                    f"{fixed_then.get(key)!r} there, {fixed_now.get(key)!r} now); use another folder to start anew")
            stored = {**settings, **{k: list(dict.fromkeys(previous.get(k, []) + settings[k])) for k in growing}}
        save_json(self.config_path, stored)
        return stored
