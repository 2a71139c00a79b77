"""Models from Hugging Face: a local model folder or ``hf-hub:ORG/NAME``, with their own preprocessing config.

Both Hugging Face formats load: a ``transformers`` image classifier (``config.json`` with ``model_type``; built
by ``AutoModelForImageClassification.from_pretrained``) and a timm model pushed to the hub (``config.json`` with
``architecture``; built by ``timm.create_model("local-dir:…")``). Hub names are read from the local cache first;
only when the cache lacks them is the hub asked, and when the hub cannot be reached the load fails at once with
one line instead of retrying.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from caap.adapters.weights import quiet_load
from caap.errors import CaapError, OptionError

HUB_PREFIX = "hf-hub:"
HUB_HOST = ("huggingface.co", 443)
PROBE_SECONDS = 3.0
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes in image-processor configs


def is_hub_source(name: str) -> bool:
    """True for ``hf-hub:ORG/NAME`` and for a folder holding a Hugging Face ``config.json``."""
    return name.startswith(HUB_PREFIX) or (Path(name).is_dir() and (Path(name) / "config.json").is_file())


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _reachable() -> bool:
    try:
        with socket.create_connection(HUB_HOST, timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def hub_available() -> bool:
    """Whether the hub may be asked: not ``HF_HUB_OFFLINE`` and ``huggingface.co`` answers within seconds."""
    return not _offline() and _reachable()


@contextlib.contextmanager
def local_files_only() -> Iterator[None]:
    """Inside, ``huggingface_hub`` (and so timm's pretrained loading) reads the local cache only and fails at
    once when a file is missing, instead of retrying a network it cannot reach; restored on exit."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def first_line(exc: BaseException, width: int = 160) -> str:
    """``Type: first line of the message``, shortened at a word boundary."""
    line = (str(exc).splitlines() or [""])[0]
    return textwrap.shorten(f"{type(exc).__name__}: {line}", width=width, placeholder=" …")


def _snapshot(repo: str) -> Path:
    """The local folder of ``repo``: the cached snapshot, else a download when the hub can be reached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if repo.count("/") != 1 or not all(repo.split("/")):
        raise OptionError("model", f"{HUB_PREFIX}{repo}: expected {HUB_PREFIX}ORG/NAME")
    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if not hub_available():
        raise CaapError(f"{HUB_PREFIX}{repo} is not in the local Hugging Face cache and the hub cannot be reached "
                        "(offline); download it where there is a network, or pass a local model folder")
    try:
        return Path(snapshot_download(repo))
    except Exception as exc:  # hub errors come in many types: not found, gated, network
        raise CaapError(f"could not fetch {HUB_PREFIX}{repo} ({first_line(exc)})") from None


def load_hub_model(name: str) -> nn.Module:
    """A model from a local Hugging Face folder or ``hf-hub:ORG/NAME`` (see the module docstring), in eval mode."""
    folder = _snapshot(name[len(HUB_PREFIX):]) if name.startswith(HUB_PREFIX) else Path(name)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CaapError(f"{name}: cannot read its config.json ({exc})") from None
    if not isinstance(config, dict):
        raise CaapError(f"{name}: its config.json is not a JSON object")
    if "architecture" in config:  # a timm model in Hugging Face format
        import timm

        try:
            with quiet_load():
                return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        except Exception as exc:  # weights files fail in many ways: truncated, pickled code, wrong keys
            raise CaapError(f"{name}: cannot load the timm model in its folder ({weights_problem(exc)})") from None
    if "model_type" not in config:
        raise CaapError(f"{name}: config.json names neither a transformers model_type nor a timm architecture")
    from transformers import AutoModel, AutoModelForImageClassification

    loader = AutoModel if config["model_type"] in IMAGE_TEXT else AutoModelForImageClassification
    try:
        with quiet_load():
            model = loader.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CaapError(f"{name}: not a transformers image classifier ({first_line(exc)})") from None
    except Exception as exc:
        raise CaapError(f"{name}: cannot load its weights ({weights_problem(exc)})") from None
    return model.eval()


IMAGE_TEXT = ("clip", "siglip", "siglip2")  # image-text models: their image tower, or zero-shot with prompts


def weights_problem(exc: BaseException) -> str:
    """One line on why a folder's weights did not load: a pickle that needs code is named as such."""
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return ("its weights are a pickle that needs code to load; only tensor checkpoints are accepted (use "
                "model.safetensors)")
    return first_line(exc)


def processor_config(model: nn.Module) -> dict[str, Any] | None:
    """The image-processor config (``preprocessor_config.json``) of a Hugging Face model: in the folder it was
    loaded from, or in the local hub cache of the repository it names; ``None`` when there is none. No network."""
    source = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
    if not source:
        return None
    path = Path(source) / "preprocessor_config.json"
    if not path.is_file() and source.count("/") == 1 and not Path(source).exists():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "preprocessor_config.json")
        path = Path(cached) if isinstance(cached, str) else path
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CaapError(f"cannot read {str(path)!r} ({exc})") from None
    return cfg if isinstance(cfg, dict) else None


def _size(value, default: int) -> tuple[int, int] | int:
    """An image-processor size entry: ``{"height", "width"}``, ``{"shortest_edge"}`` (an int) or an int."""
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
    if isinstance(value, int):
        return value
    return default


def hf_data_config(model: nn.Module, image_size: int) -> dict[str, Any]:
    """A timm-style data config (``input_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct``,
    ``crop_mode``) from the model's image-processor config; without one, ImageNet mean/std at
    ``image_size`` with a direct resize (stated in ``source``)."""
    from caap.core.contexts import IMAGENET_MEAN, IMAGENET_STD

    cfg = processor_config(model)
    if cfg is None:
        return {"input_size": (3, image_size, image_size), "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
                "source": "default (the model has no image-processor config)"}
    mean = tuple(float(v) for v in cfg.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("image_std", IMAGENET_STD))
    size = _size(cfg.get("size"), image_size)
    crop = _size(cfg.get("crop_size"), image_size) if cfg.get("do_center_crop") else None
    final = crop if crop is not None else size
    hw = final if isinstance(final, tuple) else (final, final)
    crop_pct, mode = 1.0, "center"
    if crop is not None and isinstance(size, int):
        crop_pct = min(hw) / size  # shortest edge to `size`, then the centre crop
    elif crop is None and isinstance(size, tuple):
        mode = "squash"  # resized to height x width, aspect not kept (the ViT processors)
    return {"input_size": (3, *hw), "mean": mean, "std": std,
            "interpolation": _RESAMPLE.get(cfg.get("resample"), "bicubic"), "crop_pct": crop_pct,
            "crop_mode": mode, "source": "preprocessor_config.json"}
