"""Temporary model changes, each undone on every exit path."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

import torch
from torch import nn

from caap.errors import CaapError

FAST_DTYPES = (torch.bfloat16, torch.float16)
SUPPORTED_DEVICES = ("cpu", "cuda")


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """One re-entrant lock per model object: every call that changes a model's state for its duration (eval
    mode, attention flags, hooks) holds it, so concurrent calls on one shared model run one after the other
    and each sees only its own changes; calls on different models still run in parallel."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and restore each one's ``training`` flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def place(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """Move ``model`` to ``device`` once (in place; it stays there) and return where it runs.

    ``None`` keeps the model where it is. Explainers call this at construction, so that explaining a dataset
    image by image never copies the weights per call."""
    home = model_device(model)
    if device is None:
        return home
    target = check_device(device)  # refused before anything moves: 'meta' would erase the weights
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    if target != home:
        model.to(target)
    return target


def check_device(device: torch.device | str, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` of a supported type (cpu, cuda) that this machine has; ``name`` names
    the option in the error (``"--device"`` on the command line)."""
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise CaapError(f"{name} {device!r} is not a torch device; expected cpu, cuda or cuda:N") from None
    if target.type not in SUPPORTED_DEVICES:
        raise CaapError(f"{name} {str(device)!r} is not supported; expected cpu, cuda or cuda:N")
    if target.type == "cuda" and not torch.cuda.is_available():
        raise CaapError(f"{name} {str(device)!r}: CUDA is not available on this machine")
    return target


def check_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``None``/float32 (exact), bfloat16 or float16 (autocast fast modes)."""
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}.get(dtype, dtype)
    if dtype is None or dtype == torch.float32:
        return None
    if dtype in FAST_DTYPES:
        return dtype
    raise CaapError(f"dtype {dtype!r} is not supported; expected None/torch.float32, torch.bfloat16 or torch.float16")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``; a no-op for exact float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
