"""The one option grammar of caap: ``NAME[:KEY=VALUE[:KEY=VALUE…]]`` for methods, metrics, contexts and layers.

    caap:layers=4:8:context=blur            -> ("caap", {"layers": "4:8", "context": "blur"})
    deletion:step=4:canvas=blur:2           -> ("deletion", {"step": 4, "canvas": "blur:2"})
    blur:sigma=8    blur:8    noise:0.5:3   -> contexts, by keyword or by position

A segment without ``=`` continues the previous value (``layers=4:8``, ``canvas=blur:2``); before any
``KEY=VALUE`` it is a positional value. A nested spec inside a value therefore takes its positional form
(``caap:context=blur:8``). Values that read as an int, a float or ``true``/``false`` become one.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from caap.errors import CaapError


@dataclass(frozen=True)
class Spec:
    """A parsed spec: ``name``, positional ``args`` and keyword ``options`` (values already typed)."""

    name: str
    args: tuple = ()
    options: dict = field(default_factory=dict)


def parse(spec: str, kind: str = "option") -> Spec:
    """Parse ``NAME[:VALUE…][:KEY=VALUE…]``; ``kind`` names what is parsed in error messages."""
    if not isinstance(spec, str) or not spec.strip():
        raise CaapError(f"{kind} spec {spec!r}: expected NAME[:KEY=VALUE…]")
    name, *segments = spec.strip().split(":")
    if not name:
        raise CaapError(f"{kind} spec {spec!r}: the name before ':' is missing")
    args: list[str] = []
    options: list[list[str]] = []
    for segment in segments:
        key, sep, value = segment.partition("=")
        if sep:
            if not key:
                raise CaapError(f"{kind} option {segment!r} in {spec!r}: expected KEY=VALUE")
            options.append([key, value])
        elif options:
            options[-1][1] += ":" + segment
        else:
            args.append(segment)
    typed: dict = {}
    for key, value in options:
        if key in typed:
            raise CaapError(f"{kind} option {key!r} is given twice in {spec!r}")
        typed[key] = typed_value(value)
    return Spec(name, tuple(typed_value(a) for a in args), typed)


def parse_spec(spec: str, kind: str = "option") -> tuple[str, dict]:
    """``(name, options)`` of a spec that takes keyword options only (methods, metrics)."""
    parsed = parse(spec, kind)
    if parsed.args:
        raise CaapError(f"{kind} {spec!r}: expected KEY=VALUE after {parsed.name!r}, got {parsed.args[0]!r}")
    return parsed.name, parsed.options


def typed_value(text: str):
    """``"4"`` -> 4, ``"0.5"`` -> 0.5, ``"true"``/``"false"`` -> bool, anything else stays a string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text


def parse_layers(spec: str | int | Iterable[int]) -> list[int]:
    """Block indices from ``"4:8"`` (a Python range, ``"0:12:2"`` with a step), ``"4,5,7"``, ``"6"``, an int or
    an iterable of ints; not yet range-checked against a model."""
    if isinstance(spec, int):
        return [spec]
    if not isinstance(spec, str):
        return list(spec)
    text = spec.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop = int(parts[0]), int(parts[1])
            step = int(parts[2]) if len(parts) == 3 else 1
            values = list(range(start, stop, step))
        else:
            values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise CaapError(f"bad layers {spec!r}; expected START:STOP (e.g. 4:8), a list 4,5,7 or one index") from None
    if not values:
        raise CaapError(f"layers {spec!r} name no block; expected e.g. 4:8")
    return values


def format_layers(layers: Sequence[int]) -> str:
    """The shortest spec of block indices: ``[4, 5, 6, 7]`` -> ``"4:8"``, ``[1, 3]`` -> ``"1,3"``."""
    values = list(layers)
    if len(values) > 1 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}:{values[-1] + 1}"
    return ",".join(str(v) for v in values)


def split_list(text: str, names: Collection[str]) -> list[str]:
    """A comma-separated list of specs of one registry whose ``names`` are known: a piece starts a new spec when
    it begins with one of ``names`` (``rise``, ``rise:masks=8``); any other piece continues the value before it
    (``caap:layers=4,5,rise`` -> ``["caap:layers=4,5", "rise"]``). A first piece, or one after a spec without a
    ``KEY=VALUE``, that names nothing known is kept as its own spec (and then refused by name)."""
    out: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        known = piece.split(":", 1)[0] in names
        if out and not known and "=" in out[-1].rsplit(":", 1)[-1]:
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


def file_stem(spec: str) -> str:
    """A file-name-safe form of a spec (plain names are unchanged)."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", spec)


def parse_size(text: str) -> int | tuple[int, int]:
    """An image size in pixels, ``N`` (square) or ``HxW``: ``"384"`` -> 384, ``"320x480"`` -> (320, 480)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise CaapError(f"{text!r}: expected N or HxW pixels") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise CaapError(f"{text!r}: expected N or HxW positive pixels")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])
