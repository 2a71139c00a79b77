"""Score functions: model logits ``[N, C]`` -> class-indexed scores ``[N, K]``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from caap.errors import CaapError

ScoreFn = Callable[[torch.Tensor], torch.Tensor]

def _over_classes(logits: torch.Tensor, name: str) -> torch.Tensor:
    if logits.dim() == 2 and logits.shape[1] == 1:  # a softmax over one class is 1 whatever the image
        raise CaapError(f"score {name!r} is a softmax over the model's classes, and this model has one (a single "
                        "prompt?): it is constant, so every map would be 0; use score=logit or give two or more "
                        "classes")
    return logits.float()


SCORES: dict[str, ScoreFn] = {
    "logit": lambda logits: logits,
    "prob": lambda logits: _over_classes(logits, "prob").softmax(-1),
    "logprob": lambda logits: _over_classes(logits, "logprob").log_softmax(-1),
}


def make_score(spec: str | ScoreFn) -> tuple[str, ScoreFn]:
    """Return ``(name, fn)`` for ``"logit"``, ``"prob"``, ``"logprob"`` or a callable on the logits.

    A callable receives logits ``[N, C]`` and must return scores ``[N, K]`` indexed by the target.
    """
    if callable(spec):
        return getattr(spec, "__name__", type(spec).__name__), spec
    if isinstance(spec, str) and spec in SCORES:
        return spec, SCORES[spec]
    raise CaapError(f"unknown score {spec!r}; expected one of {sorted(SCORES)} or a callable on the logits")


def apply_score(fn: ScoreFn, logits: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` and check that it returned class-indexed scores ``[N, K]`` (float32)."""
    out = fn(logits)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != logits.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CaapError(f"score function must return a tensor [N={logits.shape[0]}, K], got {got}")
    return out.float()
