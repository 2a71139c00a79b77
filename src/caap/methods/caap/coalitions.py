"""The coalition game behind CAAP's directions, on models small enough to enumerate it (docs/METHOD.md,
Directions; the study: ``benchmarks/shapley.py``, docs/DIRECTIONS.md). Not a method of the registry.

For a set ``S`` of patches, ``v(S)`` is the target logit of the context run in which the tokens of ``S`` carry the
source's stream at the patched blocks; ``denoise`` is ``v({p}) − v(∅)``, ``noise`` ``v(all) − v(all∖{p})`` and
``both`` their mean, the two-point estimate of patch ``p``'s Shapley value. :func:`game` computes every ``v(S)``
with the exact engine (one group per coalition); :func:`exact_shapley`, :func:`stratified` and
:func:`permutations` estimate the Shapley values from it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from caap.methods.caap.explainer import CAAP


def game(model, x: torch.Tensor, target: int, layers: list[int], grid: tuple[int, int]) -> np.ndarray:
    """``v(S) − v(∅)`` for every coalition ``S`` (bit ``i`` of the index: patch ``i``), ``[2^n]``."""
    n = grid[0] * grid[1]
    coalitions = torch.arange(1, 2**n)
    members = ((coalitions[:, None] >> torch.arange(n)) & 1).bool()  # [2^n - 1, n]
    groups = torch.where(members, 0, -1).view(-1, *grid)  # each copy patches its coalition as one group
    explainer = CAAP(model, layers=layers, context=torch.zeros_like(x[0]))
    out = np.zeros(2**n)
    for start in range(0, len(groups), 2048):
        chunk = groups[start : start + 2048]
        att = explainer.explain(x.expand(len(chunk), -1, -1, -1), target=target, groups=chunk, progress=False)
        values = att.scores.flatten(1).nan_to_num(nan=-np.inf).amax(1)  # every patched cell carries v(S) − v(∅)
        out[1 + start : 1 + start + len(chunk)] = values.numpy()
    return out


def exact_shapley(v: np.ndarray, n: int) -> np.ndarray:
    """``[n]``: every player's Shapley value of the game ``v`` ``[2^n]`` (bit ``i`` of an index: player ``i``)."""
    weights = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    size = np.array([bin(s).count("1") for s in range(2**n)])
    phi = np.zeros(n)
    for p in range(n):
        without = np.array([s for s in range(2**n) if not s >> p & 1])
        phi[p] = np.sum(np.array(weights)[size[without]] * (v[without | (1 << p)] - v[without]))
    return phi


def stratified(v: np.ndarray, n: int, sizes: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``[n]``: Shapley values from ``m`` random coalitions at each of ``sizes`` sizes spread over ``0 … n−1``, the
    sizes weighted equally (as the Shapley weights weight them)."""
    ks = np.unique(np.round(np.linspace(0, n - 1, sizes)).astype(int))
    phi = np.zeros(n)
    for p in range(n):
        others = [q for q in range(n) if q != p]
        per_size = []
        for k in ks:
            total = 0.0
            for _ in range(m):
                s = sum(1 << q for q in rng.choice(others, size=k, replace=False)) if k else 0
                total += v[s | (1 << p)] - v[s]
            per_size.append(total / m)
        phi[p] = np.mean(per_size)
    return phi


def permutations(v: np.ndarray, n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """``[n]``: Shapley values from ``t`` random orderings of the players."""
    phi = np.zeros(n)
    for _ in range(t):
        s = 0
        for p in rng.permutation(n):
            phi[p] += v[s | (1 << p)] - v[s]
            s |= 1 << p
    return phi / t
