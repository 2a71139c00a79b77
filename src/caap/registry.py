"""One open registry class for methods and metrics: ``register``, ``get``, ``available``, ``build`` (timm's
``register_model`` / ``list_models`` style). The CLI's choices and the parametrised tests read the same one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from caap.errors import CaapError
from caap.specs import parse

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes by name. ``kind`` ("method", "metric") names the entries in error messages.

    ``build(spec, *args, **config)`` constructs ``get(name)(*args, **spec_options, **config)``; a bad option
    or value (an unknown keyword, a wrong type) becomes one :class:`~caap.errors.CaapError` line that names
    the spec."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, cls: type[T] | None = None, *, name: str | None = None, replace: bool = False):
        """Class decorator (also ``register(cls, name=...)``): add ``cls`` under ``name`` or ``cls.name``."""

        def add(klass: type[T]) -> type[T]:
            key = name or getattr(klass, "name", "")
            if not key:
                raise CaapError(f"{klass.__name__} has no name to register as a {self.kind}")
            if ":" in key or "," in key:
                raise CaapError(f"{self.kind} name {key!r} may not contain ':' or ','")
            known = self._entries.get(key)
            if known is not None and known is not klass and not replace:
                raise CaapError(f"{self.kind} name {key!r} is already registered by {known.__name__}")
            self._entries[key] = klass
            return klass

        return add if cls is None else add(cls)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def available(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> type[T]:
        """The class registered as ``name`` (a spec's options are ignored: ``"deletion:step=4"`` -> Deletion).

        A class with a ``specialise(variant)`` classmethod takes one positional part after its name and returns
        the class of that variant (``"quantus:Sparseness"``: the Quantus metric ``Sparseness``)."""
        if not isinstance(name, str):
            raise CaapError(f"{self.kind} name must be a string, got {type(name).__name__}")
        base, _, rest = name.partition(":")
        if base not in self._entries:
            raise CaapError(f"unknown {self.kind} {base!r}; expected one of {self.available()}")
        cls = self._entries[base]
        variant = rest.split(":", 1)[0]
        if hasattr(cls, "specialise") and variant and "=" not in variant:
            return cls.specialise(variant)
        return cls

    def build(self, spec: str, *args: Any, **config: Any) -> T:
        """An instance from ``NAME[:VARIANT][:KEY=VALUE…]``; ``config`` adds or overrides options."""
        parsed = parse(spec, self.kind)
        cls = self.get(spec)
        positional = 1 if hasattr(self._entries[parsed.name], "specialise") else 0
        if len(parsed.args) > positional:
            raise CaapError(f"{self.kind} {spec!r}: expected KEY=VALUE after {parsed.name!r}, "
                            f"got {parsed.args[positional]!r}")
        return construct(cls, f"{self.kind} {spec!r}", *args, **{**parsed.options, **config})


def construct(factory: Callable[..., T], what: str, *args: Any, **options: Any) -> T:
    """``factory(*args, **options)`` with a wrong option or value reported as one CaapError line (of the error's
    own class: an unsupported model stays an :class:`~caap.errors.UnsupportedModelError`)."""
    try:
        return factory(*args, **options)
    except CaapError as exc:
        raise (type(exc) if type(exc).__init__ is CaapError.__init__ else CaapError)(f"{what}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CaapError(f"{what}: {exc}") from None
