"""The typed options of a benchmark run, parsed once at the edge and passed on as objects.

- :class:`RunOptions`: what ``caap bench`` and ``caap sweep`` share (model, data, subset, target, device…); the
  bench's :class:`~caap.bench.runner.BenchConfig` and the sweep's :class:`~caap.bench.sweep.SweepConfig` extend it,
  so neither copies the other's fields.
- :class:`DataSpec`: ``--data`` in the one option grammar (:mod:`caap.specs`): ``synthetic[:VARIANT]``,
  ``grid:DIR[:threshold=P][:seed=S]``, or an image folder.
- :class:`MethodSpec`: one method to run, its name, typed options and the label its records carry; built from a
  spec string (``caap:layers=4:8``) or directly (the sweep's settings), never re-serialised to be parsed again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from caap.errors import CaapError, OptionError
from caap.methods import METHODS, Explainer
from caap.specs import format_layers, parse, parse_spec

TARGETS = ("auto", "label", "pred")


@dataclass(frozen=True)
class DataSpec:
    """Where a run's images come from: ``kind`` ``"folder"`` (``path``), ``"synthetic"`` (``variant``) or
    ``"grid"`` (``path``, ``options``: ``threshold``, ``seed``)."""

    kind: str
    path: str | None = None
    variant: str = "simple"
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        if not isinstance(text, str) or not text.strip():
            raise OptionError("data", f"{text!r}: expected an image folder, synthetic[:VARIANT] or grid:DIR")
        head = text.split(":", 1)[0]
        if head == "synthetic":
            spec = parse(text, "data")
            if spec.options or len(spec.args) > 1:
                raise OptionError("data", f"{text!r}: expected synthetic or synthetic:VARIANT")
            return cls("synthetic", variant=str(spec.args[0]) if spec.args else "simple")
        if head == "grid":
            spec = parse(text, "data")
            if len(spec.args) != 1:
                raise OptionError("data", f"{text!r}: expected grid:DIR[:threshold=P][:seed=S]")
            unknown = set(spec.options) - {"threshold", "seed"}
            if unknown:
                raise OptionError("data", f"{text!r}: unknown option {sorted(unknown)[0]!r}; expected threshold, seed")
            return cls("grid", path=str(spec.args[0]), options=dict(spec.options))
        return cls("folder", path=text)


@dataclass(frozen=True)
class MethodSpec:
    """One method of a run: its registry ``name``, typed ``options`` and the ``label`` its records and table rows
    carry (the spec text it was parsed from, or a canonical one)."""

    name: str
    options: Mapping[str, Any]
    label: str

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        name, options = parse_spec(text, "method")
        METHODS.get(name)  # an unknown name fails here, with the registry's message
        return cls(name, options, text)

    @classmethod
    def of(cls, name: str, **options: Any) -> MethodSpec:
        """A spec built from typed options; the label is their canonical text (``caap:layers=4:8:context=blur``)."""
        text = ":".join([name, *(f"{k}={format_layers(v) if k == 'layers' else v}" for k, v in options.items())])
        return cls(name, options, text)

    @property
    def cls(self) -> type[Explainer]:
        return METHODS.get(self.name)

    def build(self, model, placement: Placement | RunOptions | None = None) -> Explainer:
        """The configured explainer on ``model``: its own options and the run-wide ones it takes (device, dtype,
        batch size, normalisation) — the one path from options to an explainer, for every command."""
        from caap.registry import construct

        extra = placement.method_options(self.cls) if placement is not None else {}
        return construct(self.cls, f"method {self.label!r}", model, **{**extra, **self.options})

    def with_options(self, **options: Any) -> MethodSpec:
        """This spec with ``options`` added (a command's shorthand flags), the label unchanged."""
        return MethodSpec(self.name, {**self.options, **options}, self.label)


@dataclass(frozen=True)
class Placement:
    """Where and how every method of a command runs: ``device``, ``dtype``, ``batch_size`` (each given only to
    the methods that take it) and the model's input ``normalization``; None leaves a method's default."""

    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None
    normalization: Any = None

    def method_options(self, cls: type[Explainer]) -> dict:
        accepted = set(cls.options())
        options = {"device": self.device, "dtype": self.dtype, "batch_size": self.batch_size,
                   "normalization": self.normalization}
        return {k: v for k, v in options.items() if v is not None and k in accepted}


@dataclass(kw_only=True)
class RunOptions:
    """The run-wide options (see the module docstring). ``target``: ``"label"``, ``"pred"`` or ``"auto"`` (the
    label where the image has one, else the prediction); ``prompts`` (and ``templates``): an image-text model as
    the zero-shot classifier of these prompts (:func:`caap.adapters.zero_shot`)."""

    model: str
    data: str
    weights: str | None = None
    img_size: int | tuple[int, int] | None = None
    prompts: list[str] | None = None
    templates: list[str] | None = None
    masks: str | None = None
    labels: str | None = None
    limit: int | None = None
    every: int = 1
    offset: int = 0
    target: str = "auto"
    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None

    def check(self) -> DataSpec:
        """Refuse bad values (one line naming the option); returns the parsed data spec."""
        if self.target not in TARGETS:
            raise OptionError("target", f"{self.target!r}: expected auto, label or pred")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise OptionError("limit", f"{self.limit!r}: expected a positive number of images")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise OptionError("every", f"{self.every!r}: expected a positive step")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or not 0 <= self.offset < self.every:
            raise OptionError("offset", f"{self.offset!r}: expected a first position from 0 to every - 1 = "
                                        f"{self.every - 1}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise OptionError("batch_size", f"{self.batch_size!r}: expected a positive number")
        if self.masks is not None and not Path(self.masks).is_dir():
            raise OptionError("masks", f"{self.masks!r}: expected a folder of masks")
        return DataSpec.parse(self.data)

    def run_options(self) -> dict[str, Any]:
        """The fields of :class:`RunOptions` as keywords (for a config that extends it). ``offset`` only where it is
        not 0, so that run folders from before the option resume with the settings they stored."""
        return {f.name: getattr(self, f.name) for f in fields(RunOptions) if f.name != "offset" or self.offset}

    def method_options(self, cls: type[Explainer]) -> dict:
        """The run-wide options a method takes: ``device``, ``dtype``, ``batch_size`` where it has one."""
        return Placement(self.device, self.dtype, self.batch_size).method_options(cls)


def method_specs(methods) -> list[MethodSpec]:
    """Methods given as spec strings or :class:`MethodSpec` objects, as objects (labels unique)."""
    if not methods:
        raise OptionError("methods", "is empty; expected e.g. caap,rollout,gae")
    specs = [m if isinstance(m, MethodSpec) else MethodSpec.parse(m) for m in methods]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise CaapError(f"methods name {next(x for x in labels if labels.count(x) > 1)!r} twice")
    return specs
