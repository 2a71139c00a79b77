"""Attribution methods behind one interface: ``get(name)(model, **config).explain(images, target)``."""

from caap.methods.base import Explainer
from caap.methods.registry import available, build, get, register

__all__ = ["Explainer", "available", "build", "get", "register"]
