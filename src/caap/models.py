"""Building models by name: timm names (hub weights or a local file) and the embedded demo models."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
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
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise CaapError(
                f"weights {str(path)!r} are a pickle that needs code to load; only tensor checkpoints are accepted "
                "(re-save the state_dict, or use .safetensors)"
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise CaapError(f"cannot read weights {str(path)!r} ({str(exc).splitlines()[0]})") from None
        return _unwrap(obj, path)
    raise CaapError(f"weights {str(path)!r}: expected a .safetensors or .pth/.pt file")


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


def create_model(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """A timm model by name: ``weights`` from a local file, else ``pretrained=True`` from the hub.

    ``caap-demo`` (``caap-demo-simple``, ``caap-demo-conjunction``) name the embedded demo models.
    """
    import timm

    from caap.data.demo import DEMO_NAMES, build_demo_architecture, load_demo_model

    if name in DEMO_NAMES:
        if weights is None:
            return load_demo_model(DEMO_NAMES[name])
        model = build_demo_architecture()
        _load_strict(model, load_state_dict(weights), name, weights)
        return model.eval()

    if not timm.is_model(name):
        raise CaapError(
            f"unknown model {name!r}; expected a timm model name such as 'deit_tiny_patch16_224' or caap-demo"
        )
    with torch.device("meta"):  # check the architecture before fetching or reading any weights
        skeleton = timm.create_model(name, pretrained=False)
    from caap.adapters import adapt

    adapt(skeleton)
    if weights is None:
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as exc:  # hub errors come in many types; all mean "no weights"
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CaapError(
                f"could not fetch pretrained weights for {name!r} from the hub ({type(exc).__name__}: {first[:160]}); "
                "pass --weights FILE"
            ) from None
        return model.eval()
    state = load_state_dict(weights)
    kwargs = {}
    head = state.get("head.weight")
    if isinstance(head, torch.Tensor) and head.dim() == 2:
        kwargs["num_classes"] = head.shape[0]
    model = timm.create_model(name, pretrained=False, **kwargs)
    _load_strict(model, state, name, weights)
    return model.eval()


def _load_strict(model: nn.Module, state: dict, name: str, weights) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CaapError(f"weights {str(weights)!r} do not fit {name!r}: {detail}") from None
