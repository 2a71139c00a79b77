"""``NAME[:KEY=VALUE[:KEY=VALUE…]]`` specs for methods and metrics on the command line and in runs."""

from __future__ import annotations

import re

from caap.errors import CaapError


def parse_spec(spec: str, kind: str = "option") -> tuple[str, dict]:
    """``"deletion:step=4:canvas=blur:2"`` -> ``("deletion", {"step": 4, "canvas": "blur:2"})``.

    A segment without ``=`` continues the previous value (``canvas=blur:2``, ``layers=4:8``); values that
    read as an int or a float become one.
    """
    name, *segments = spec.split(":")
    options: list[str] = []
    for segment in segments:
        if "=" not in segment and options:
            options[-1] += ":" + segment
        else:
            options.append(segment)
    kwargs: dict = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise CaapError(f"{kind} option {option!r} in {spec!r}: expected KEY=VALUE")
        for cast in (int, float):
            try:
                kwargs[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = value
    return name, kwargs


def file_stem(spec: str) -> str:
    """A file-name-safe form of a spec (plain names are unchanged)."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", spec)
