"""CAAP itself: the explainer presets, the unpatched runs, the strategies (exact, fast) and refiners that compute
the maps, the FLOP count and the naive reference."""

from caap.methods.caap.exact import Exact
from caap.methods.caap.explainer import CAAP, AdaptiveCAAP, CAAPBase, FastCAAP
from caap.methods.caap.fast import Fast
from caap.methods.caap.flops import MacCount, caap_macs, count_macs
from caap.methods.caap.reference import naive_caap
from caap.methods.caap.refine import CoarseToFine, FastThenExact, Refiner
from caap.methods.caap.strategies import Direction, Effects, Strategy

__all__ = ["CAAP", "AdaptiveCAAP", "CAAPBase", "CoarseToFine", "Direction", "Effects", "Exact", "Fast",
           "FastCAAP", "FastThenExact", "MacCount", "Refiner", "Strategy", "caap_macs", "count_macs", "naive_caap"]
