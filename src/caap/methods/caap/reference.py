"""A naive, hook-based CAAP: one full forward of the real model per patch group.

This is the independent reference the batched engine is checked against (tests, benchmarks). It uses
no adapter code: only the model's own ``forward`` and forward-pre-hooks on its blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


@torch.inference_mode()
def naive_caap(
    forward: Callable[[torch.Tensor], torch.Tensor],
    blocks: Sequence[nn.Module],
    source: torch.Tensor,
    context: torch.Tensor,
    layers: Sequence[int],
    target: int,
    num_prefix: int,
    score: Callable[[torch.Tensor], torch.Tensor] = lambda logits: logits,
    groups: torch.Tensor | None = None,
    direction: str = "denoise",
) -> torch.Tensor:
    """CAAP map of one image, computed the slow way.

    Args:
        forward: the model as ``images [1, 3, H, W] -> logits [1, C]``.
        blocks: the model's blocks; the first positional argument of each is its input residual stream.
        source, context: normalised images ``[1, 3, H, W]``.
        layers: block indices whose input is patched.
        target: the class index read from the score.
        num_prefix: number of prefix tokens before the patch tokens.
        score: logits ``[1, C]`` -> scores ``[1, K]``.
        groups: optional ``[gh*gw]`` (or any shape, flattened) group id per patch; default one per patch.
        direction: ``"denoise"`` (the context run with the group's source stream), ``"noise"`` (the source run
            with the group's context stream) or ``"both"`` (their mean); docs/METHOD.md, Directions.

    Returns:
        float32 ``[n_patches]``: denoise ``score(context run, group patched from the source)[target] −
        score(context)[target]``; noise ``score(source)[target] − score(source run, group patched from the
        context)[target]``; both, their mean.
    """
    if direction == "both":
        args = (forward, blocks, source, context, layers, target, num_prefix, score, groups)
        return (naive_caap(*args, direction="denoise") + naive_caap(*args, direction="noise")) / 2
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be denoise, noise or both, got {direction!r}")
    donor, patched_run = (source, context) if direction == "denoise" else (context, source)
    sign = 1.0 if direction == "denoise" else -1.0
    stored: dict[int, torch.Tensor] = {}

    def capture(index: int):
        def hook(module, args, kwargs):
            stored[index] = _hidden(args, kwargs).clone()

        return hook

    handles = [blocks[i].register_forward_pre_hook(capture(i), with_kwargs=True) for i in layers]
    try:
        forward(donor)
    finally:
        for h in handles:
            h.remove()
    n_patches = stored[layers[0]].shape[1] - num_prefix
    group_ids = torch.arange(n_patches) if groups is None else groups.reshape(-1).cpu()
    base = score(forward(patched_run))[0, target].float()
    result = torch.empty(n_patches, dtype=torch.float32)
    for gid in torch.unique(group_ids):
        tokens = (torch.nonzero(group_ids == gid)[:, 0] + num_prefix).tolist()

        def patch(index: int, tokens=tokens):
            def hook(module, args, kwargs):
                hidden = _hidden(args, kwargs).clone()
                hidden[:, tokens] = stored[index][:, tokens]
                return _replace(args, kwargs, hidden)

            return hook

        handles = [blocks[i].register_forward_pre_hook(patch(i), with_kwargs=True) for i in layers]
        try:
            value = sign * (score(forward(patched_run))[0, target].float() - base)
        finally:
            for h in handles:
                h.remove()
        result[group_ids == gid] = value.cpu()
    return result


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _replace(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}
