"""Temporary model changes, each undone on every exit path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from caap.errors import CaapError

FAST_DTYPES = (torch.bfloat16, torch.float16)


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


@contextlib.contextmanager
def on_device(model: nn.Module, device: torch.device | None) -> Iterator[torch.device]:
    """Run on ``device``: a model elsewhere is moved there and moved back on exit (in place)."""
    home = model_device(model)
    if device is None or torch.device(device) == home:
        yield home
        return
    model.to(device)
    try:
        yield torch.device(device)
    finally:
        model.to(home)


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
