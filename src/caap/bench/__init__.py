"""Benchmarks and the commands' work: the resumable runner, sweeps as generated specs, reports, and the
``explain`` / ``compare`` / ``demo`` loops as library functions."""

from caap.bench import demo, explain, report, runner, store, sweep, table
from caap.bench.runner import BenchConfig, load, run
from caap.bench.store import RunStore
from caap.bench.sweep import SweepConfig

__all__ = ["BenchConfig", "RunStore", "SweepConfig", "demo", "explain", "load", "report", "run", "runner", "store",
           "sweep", "table"]
