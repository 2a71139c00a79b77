"""Methods by name: ``available()`` lists them, ``get(name)`` returns the class (timm ``list_models`` style)."""

from __future__ import annotations

import importlib

from caap.errors import CaapError

_REGISTRY: dict[str, type] = {}
_BUILTIN_MODULES = (
    "caap.core.engine", "caap.methods.gradients", "caap.methods.perturbation", "caap.methods.attention",
    "caap.methods.cam",
)


def register(cls: type) -> type:
    """Class decorator: add an :class:`~caap.methods.base.Explainer` subclass under ``cls.name``."""
    name = getattr(cls, "name", "")
    if not name:
        raise CaapError(f"{cls.__name__} has no name to register under")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise CaapError(f"method name {name!r} is already registered by {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available() -> list[str]:
    """Registered method names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str) -> type:
    """The explainer class registered as ``name``; call it as ``get(name)(model, **config)``."""
    _load_builtin()
    if name not in _REGISTRY:
        raise CaapError(f"unknown method {name!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def build(spec: str, model, **config):
    """An explainer from ``NAME[:KEY=VALUE…]`` (e.g. ``"rise:masks=500"``, ``"caap:layers=2:6:context=blur"``)."""
    from caap.specs import parse_spec

    name, kwargs = parse_spec(spec, "method")
    cls = get(name)
    try:
        return cls(model, **{**kwargs, **config})
    except TypeError as exc:
        raise CaapError(f"method {spec!r}: {exc}") from None
