"""The cost–quality frontier as a figure: seconds per map (log scale; the median with its quartiles) against the
mean score (with its 95 % interval), one point per method, the Pareto front drawn (plain arrays in, a matplotlib
Figure out)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure


def frontier_figure(names: Sequence[str], seconds: Sequence[tuple[float, float, float]],
                    scores: Sequence[tuple[float, float, float]], front: Sequence[str], *, title: str,
                    ylabel: str) -> Figure:
    """``seconds[i] = (p25, median, p75)`` and ``scores[i] = (low, mean, high)`` of method ``names[i]``; ``front``:
    the methods on the Pareto front (no other is both cheaper and better), joined by a step line."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for name, (p25, med, p75), (low, mean, high) in zip(names, seconds, scores, strict=True):
        on = name in front
        ax.errorbar(med, mean, xerr=[[med - p25], [p75 - med]], yerr=[[mean - low], [high - mean]], fmt="o",
                    ms=6 if on else 4, color="#b2182b" if on else "#4d4d4d", capsize=2, lw=1)
        ax.annotate(name, (med, mean), textcoords="offset points", xytext=(4, 3), fontsize=7,
                    color="#b2182b" if on else "#4d4d4d")
    points = sorted((seconds[names.index(n)][1], scores[names.index(n)][1]) for n in front)
    if len(points) > 1:
        ax.step([p[0] for p in points], [p[1] for p in points], where="post", color="#b2182b", lw=1, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per map (median, quartiles; log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return fig
