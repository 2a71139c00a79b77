"""Attribution methods behind one interface: ``get(name)(model, **config).explain(images, target)``.

Every built-in method is registered when this package is imported; ``register`` adds a user's own
:class:`Explainer` subclass, which then works in ``build``, the CLI and the benchmark like the built-ins.
"""

from caap.methods import (  # noqa: F401  (they register themselves)
    atman,
    attention,
    attnlrp,
    cam,
    chefer,
    extremal,
    gradients,
    legrad,
    libragrad,
    lrp,
    mda,
    perturbation,
    tis,
    tokens,
    vitcx,
)
from caap.methods.base import METHODS, Explainer, Forward, Maps, register
from caap.methods.caap import CAAP, AdaptiveCAAP, FastCAAP

available = METHODS.available
get = METHODS.get
build = METHODS.build

__all__ = ["CAAP", "METHODS", "AdaptiveCAAP", "FastCAAP", "Explainer", "Forward", "Maps", "available", "build", "get",
           "register"]
