"""Target-class handling shared by every method."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from caap.errors import CaapError

TargetLike = int | Sequence[int] | torch.Tensor | None


def resolve_target(target: TargetLike, logits: torch.Tensor) -> torch.Tensor:
    """Targets as int64 ``[B]`` on the CPU; ``None`` means the top-1 class of ``logits`` ``[B, C]``."""
    batch, num_classes = logits.shape
    if target is None:
        return logits.argmax(dim=-1).to("cpu", torch.int64)
    if isinstance(target, bool):
        raise CaapError(f"target must be an int, a sequence or a tensor of class indices, got {target!r}")
    if isinstance(target, int):
        if not 0 <= target < num_classes:
            raise CaapError(f"target {target} is out of range; expected a class index in 0..{num_classes - 1}")
        t = torch.full((batch,), target, dtype=torch.int64)
    else:
        try:
            t = torch.as_tensor(target).to("cpu")
        except (TypeError, ValueError, RuntimeError):
            raise CaapError(f"target must be an int, a sequence or a tensor of class indices, got {target!r}") from None
        if t.dim() == 0:
            t = t.expand(batch)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise CaapError(f"target must hold integer class indices, got dtype {t.dtype}")
        t = t.to(torch.int64).reshape(-1)
        if t.shape[0] != batch:
            raise CaapError(f"target has {t.shape[0]} entries, expected one per image ({batch})")
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise CaapError(f"target {t[bad][0].item()} is out of range; expected a class index in 0..{num_classes - 1}")
    return t.clone()


def is_index(text: str) -> bool:
    """Whether ``text`` is a class index: ASCII digits only (``"²"`` and other Unicode digits are names)."""
    text = text.strip()
    return bool(text) and text.isascii() and text.isdigit()


def class_index(text: str, names: Sequence[str]) -> int:
    """A class by index or by name: digits are an index; otherwise a name matches a class whose name or one of
    its comma-separated synonyms (``"robin, American robin, Turdus migratorius"``) equals it, case-insensitive,
    else starts with it. Exactly one class must match."""
    text = text.strip()
    if is_index(text):
        index = int(text)
        if not 0 <= index < len(names):
            raise CaapError(f"class {index} is out of range; expected a class index in 0..{len(names) - 1}")
        return index
    key = text.lower()
    if not key:
        raise CaapError("class name is empty; expected a class index or a name such as 'robin'")
    synonyms = [[s.strip().lower() for s in str(n).split(",")] for n in names]
    for match in (lambda s: s == key, lambda s: s.startswith(key)):
        found = [i for i, syn in enumerate(synonyms) if any(match(s) for s in syn)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            shown = "; ".join(f"{i} {names[i]!r}" for i in found[:5]) + ("; …" if len(found) > 5 else "")
            raise CaapError(f"class name {text!r} matches {len(found)} classes ({shown}); be more specific or "
                            "give the index")
    raise CaapError(f"no class is named {text!r} or starts with it; expected a class index or one of the model's "
                    f"class names (e.g. {names[0]!r})")
