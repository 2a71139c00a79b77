"""The tiny random-init models of every architecture (:mod:`caap.adapters.tiny`), under the name the tests use."""

from caap.adapters.tiny import *  # noqa: F403
from caap.adapters.tiny import scale_weights as _scale  # noqa: F401
