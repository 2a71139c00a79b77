"""Reading weights files safely: safetensors, or tensor-only torch checkpoints (no code runs on load)."""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from caap.errors import CaapError

_WRAPPER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema", "module")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` with ``torch.load(weights_only=True)``.

    Pickled checkpoints that need arbitrary code to load are refused. A state dict nested under a usual
    key (``state_dict``, ``model``, …) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CaapError(f"weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CaapError(f"cannot read weights {str(path)!r}: not a valid safetensors file ({exc})") from None
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            with quiet_load():
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise CaapError(
                f"weights {str(path)!r} are a pickle that needs code to load; only tensor checkpoints are accepted "
                "(re-save the state_dict, or use .safetensors)"
            ) from None
        except Exception as exc:  # torch's unpickler raises many types on a file that is no checkpoint
            first = (str(exc).splitlines() or [""])[0]
            raise CaapError(f"cannot read weights {str(path)!r}: not a torch checkpoint "
                            f"({type(exc).__name__}: {first})") from None
        return _unwrap(obj, path)
    raise CaapError(f"weights {str(path)!r}: expected a .safetensors or .pth/.pt file")


@contextlib.contextmanager
def quiet_load() -> Iterator[None]:
    """Loading weights: the loader's warnings (torch's unpickler warns about pickle protocols) are held back and
    shown only if the load succeeds, so a refused file gives one line, not a warning and then the error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {k.removeprefix("module."): v for k, v in obj.items()}
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        break
    raise CaapError(f"weights {str(path)!r} hold no state dict of tensors")


def load_strict(model: nn.Module, state: dict, name: str, weights) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CaapError(f"weights {str(weights)!r} do not fit {name!r}: {detail}") from None
