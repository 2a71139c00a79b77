"""The command line's flags turned into the library's typed values, once, at the edge: method and metric specs,
``--target``, a method's shorthand flags (``--layers``, ``--context``…), prompts and templates, integer lists.
The CLI (:mod:`caap.cli`) stays parsing and printing; everything here raises :class:`~caap.errors.CaapError` with
one line naming the flag."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from caap.errors import CaapError


def target(text: str, loaded=None) -> int | None:
    """``--target``: None for ``auto``, else a class index, given as one or by name (with the model's names)."""
    if text == "auto":
        return None
    from caap.core.targets import class_index, is_index

    if is_index(text):
        return int(text)
    if loaded is None:
        return None  # a name: resolved once the model (and its class names) is loaded

    try:
        index = class_index(text, loaded.class_names)
    except CaapError as exc:
        raise CaapError(f"--target {text!r}: {exc}") from None
    print(f"--target {text!r}: class {index} ({loaded.class_names[index]})", file=sys.stderr)
    return index


def specs(text: str, kind: str = "method") -> list[str]:
    """The specs of ``--methods`` / ``--metrics``; ``all`` is every registered one with its default settings
    (families that need a name, as ``quantus:NAME``, are not in it)."""
    from caap import methods, metrics
    from caap.specs import split_list

    registry = methods if kind == "method" else metrics
    if text.strip() == "all":
        return [n for n in registry.available() if not hasattr(registry.get(n), "specialise")]
    return split_list(text, registry.available())


def method_spec(method: str, args: argparse.Namespace, loaded):
    """``(MethodSpec, Placement)`` of ``caap explain``: the method's spec with the shorthand flags (``--layers``,
    ``--context``, ``--score``, ``--batch-size``) as its options — a flag the method does not take is an error —
    and where it runs (``--device``, ``--dtype``, the model's normalisation); built like a bench run's methods."""
    from caap.bench.options import MethodSpec
    from caap.core.contexts import CONTEXTS
    from caap.core.state import check_device
    from caap.data.images import load_image

    spec = MethodSpec.parse(method)
    accepted = set(spec.cls.options())
    flags = {"layers": args.layers, "context": args.context, "score": args.score, "batch_size": args.batch_size}
    options = {}
    for key, value in flags.items():
        if value is None:
            continue
        target = "baseline" if key == "context" and "baseline" in accepted else key
        if target not in accepted:
            raise CaapError(f"method {spec.name!r} takes no --{key.replace('_', '-')}")
        if key == "context" and value.split(":")[0] not in CONTEXTS and Path(value).is_file():
            value = loaded.transform(load_image(value))  # [3, H, W]: an image file (any name) as the context
        options[target] = value
    device = str(check_device(args.device, "--device")) if args.device is not None else None
    return spec.with_options(**options), loaded.placement(device, args.dtype if args.dtype != "float32" else None)


def prompts(args: argparse.Namespace) -> tuple[list[str] | None, list[str] | None]:
    """``--prompts`` and ``--templates`` as lists (None when not given; given but empty is an error)."""
    from caap.adapters import read_prompts, read_templates

    if args.templates is not None and args.prompts is None:
        raise CaapError("--templates apply to --prompts (class names); give both")
    prompts = read_prompts(args.prompts) if args.prompts is not None else None
    templates = read_templates(args.templates) if args.templates is not None else None
    return prompts, templates


def ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CaapError(f"{flag} {text!r}: expected comma-separated integers") from None
    if not values or min(values) < 0:
        raise CaapError(f"{flag} {text!r}: expected non-negative integers")
    return values
