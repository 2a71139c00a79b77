"""CAAP itself: the exact batched engine, its coarse-to-fine mode, its FLOP count and the naive reference."""

from caap.methods.caap.engine import CAAP, AdaptiveCAAP, FastCAAP
from caap.methods.caap.flops import MacCount, caap_macs, count_macs
from caap.methods.caap.reference import naive_caap

__all__ = ["CAAP", "AdaptiveCAAP", "FastCAAP", "MacCount", "caap_macs", "count_macs", "naive_caap"]
