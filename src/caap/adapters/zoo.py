"""Building models by name: timm names (hub weights or a local file), Hugging Face folders and ``hf-hub:``
names (:mod:`caap.adapters.hub`), the embedded demo models; and each model's own preprocessing config."""

from __future__ import annotations

import contextlib
import os

import timm
import torch
from torch import nn

from caap.adapters.auto import adapt
from caap.adapters.backbones import build_backbone, zoo_arch
from caap.adapters.demo import DEMO_NAMES, build_demo_architecture, load_demo_model
from caap.adapters.hub import (
    first_line,
    hf_data_config,
    hub_available,
    is_hub_source,
    load_hub_model,
    local_files_only,
)
from caap.adapters.openclip import OPENAI_MEAN, OPENAI_STD
from caap.adapters.weights import load_state_dict, load_strict
from caap.errors import CaapError, OptionError


def create_model(name: str, weights: str | os.PathLike | None = None, *, needs_vit: str | None = None,
                 img_size: int | tuple[int, int] | None = None, dynamic_img_size: bool = False) -> nn.Module:
    """A model by name: a timm name (``weights`` from a local file, else ``pretrained=True`` from the hub), a
    local Hugging Face model folder or ``hf-hub:ORG/NAME`` (transformers or timm format; the weights are the
    folder's), or ``caap-demo`` (``caap-demo-simple``, ``caap-demo-conjunction``), the embedded demo models.

    ``needs_vit``: a method name that needs a ViT's tokens; a model caap can only treat as a plain classifier
    is then refused before any weights are read. Offline, hub weights come from the local cache or fail at once.

    ``img_size`` (timm names): build the model for another input size; the weights' position embeddings are
    resampled to its grid as timm does when it loads weights for another size (the model module's
    ``checkpoint_filter_fn``, for a local file as for the hub's). ``dynamic_img_size``: a timm model that takes
    any input size (its position embeddings resampled on every call).
    """
    sizing = _sizing(img_size, dynamic_img_size)
    if sizing and not timm.is_model(name):
        raise OptionError("img_size", f"applies to timm models; {name!r} is not one")
    if name.startswith(OPEN_CLIP):
        return load_open_clip(name, weights)
    if is_hub_source(name):
        if weights is not None:
            raise OptionError("weights", f"does not apply to {name!r}: a Hugging Face model brings its own weights")
        model = load_hub_model(name)
        adapt(model)  # a one-line error now for an architecture caap cannot explain
        return model
    arch = zoo_arch(name)
    if arch is not None:  # a member of the backbone zoo, trained by python -m caap.data.train --arch ARCH
        if weights is None:
            raise OptionError("weights", f"is needed for {name!r} (train it: python -m caap.data.train --arch {arch})")
        state = load_state_dict(weights)
        head = state.get("head.weight")
        model = build_backbone(arch, head.shape[0] if isinstance(head, torch.Tensor) else 10)
        load_strict(model, state, name, weights)
        return model.eval()
    if name in DEMO_NAMES:
        if weights is None:
            return load_demo_model(DEMO_NAMES[name])
        model = build_demo_architecture()
        load_strict(model, load_state_dict(weights), name, weights)
        return model.eval()

    if not timm.is_model(name):
        raise CaapError(
            f"unknown model {name!r}; expected a timm model name such as 'deit_tiny_patch16_224', a Hugging Face "
            "model folder, hf-hub:ORG/NAME or caap-demo"
        )
    with torch.device("meta"):  # check the architecture before fetching or reading any weights
        try:
            skeleton = timm.create_model(name, pretrained=False, **sizing)
        except TypeError as exc:
            raise OptionError("img_size", f"{img_size!r}: {name!r} takes no input size option ({exc})") from None
    if img_size is not None:
        check_img_size(skeleton, name, sizing["img_size"])
    adapter = adapt(skeleton)
    if needs_vit is not None and not adapter.tokens:
        raise CaapError(f"model {name!r} ({type(skeleton).__name__}) is not a ViT caap can open: method {needs_vit!r} "
                        "needs a ViT's tokens; use a model-agnostic method (saliency, integrated_gradients, occlusion, "
                        "rise…)")
    if weights is None:
        online = hub_available()
        try:
            with contextlib.nullcontext() if online else local_files_only():
                model = timm.create_model(name, pretrained=True, **sizing)
        except Exception as exc:  # hub errors come in many types; all mean "no weights"
            where = "from the hub" if online else "(offline, and not in the local cache)"
            raise OptionError("weights", f"are needed: could not load pretrained weights for {name!r} {where}: "
                                         f"{first_line(exc, 120)}") from None
        return model.eval()
    state = load_state_dict(weights)
    kwargs = {}
    classifier = (getattr(skeleton, "pretrained_cfg", None) or {}).get("classifier", "head")
    head = state.get(f"{classifier if isinstance(classifier, str) else classifier[0]}.weight")
    if isinstance(head, torch.Tensor) and head.dim() == 2:
        kwargs["num_classes"] = head.shape[0]
    model = timm.create_model(name, pretrained=False, **kwargs, **sizing)
    load_strict(model, resized(model, state), name, weights)
    return model.eval()


def _sizing(img_size, dynamic_img_size: bool) -> dict:
    out = {}
    if img_size is not None:
        pair = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
            raise OptionError("img_size", f"{img_size!r}: expected a positive int or (H, W)")
        out["img_size"] = pair
    if dynamic_img_size:
        out["dynamic_img_size"] = True
    return out


MAX_TOKENS = 16_384  # patch tokens of a model built for another size: a 128 x 128 grid (2,048 px at patch 16)
COSTLY = 4.0  # a warning when the grid has this many times the tokens of the model's own size


def check_img_size(skeleton: nn.Module, name: str, size: tuple[int, int]) -> None:
    """Refuse an input size the model cannot use whole: smaller than a patch, not a multiple of the patch size
    (timm's patch embedding would drop the remainder), or over :data:`MAX_TOKENS` patch tokens (memory grows with
    the square of the tokens); warn when the grid has many times the tokens of the model's own size (exact CAAP
    patches every token, so its cost grows faster than the square). ``skeleton``: the model on the meta device."""
    import warnings

    embed = getattr(skeleton, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if patch is None:
        return
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    (h, w), shown = size, f"{size[0]}x{size[1]}" if size[0] != size[1] else str(size[0])
    if h < ph or w < pw:
        raise OptionError("img_size", f"{shown}: smaller than one {ph}x{pw} patch of {name!r}; expected at least "
                                      f"{ph} px a side")
    if h % ph or w % pw:
        below = "x".join(str(max(p, v // p * p)) for v, p in ((h, ph), (w, pw)))
        above = "x".join(str(-(-v // p) * p) for v, p in ((h, ph), (w, pw)))
        if h == w and ph == pw:
            below, above = below.split("x")[0], above.split("x")[0]
        raise OptionError("img_size", f"{shown}: not a multiple of {name!r}'s {ph}x{pw} patches (the remainder would "
                                      f"be dropped unseen); expected e.g. {below} or {above}")
    tokens = (h // ph) * (w // pw)
    if tokens > MAX_TOKENS:
        raise OptionError("img_size", f"{shown}: {tokens:,} patch tokens, more than caap builds a model for "
                                      f"({MAX_TOKENS:,}: a {int(MAX_TOKENS ** 0.5) * ph} px square at this patch size)")
    own = getattr(getattr(skeleton, "pretrained_cfg", None) or {}, "get", lambda *_: None)("input_size")
    if own:
        base = (own[1] // ph) * (own[2] // pw)
        if base and tokens >= COSTLY * base:
            warnings.warn(f"img_size {shown}: {tokens:,} patch tokens, {tokens / base:.0f}x the {base} of {name!r}'s "
                          "own size; exact CAAP patches every token, so a map costs over "
                          f"{(tokens / base) ** 2:.0f}x as much (docs/PERFORMANCE.md)", RuntimeWarning, stacklevel=3)


def resized(model: nn.Module, state: dict) -> dict:
    """``state`` fitted to ``model``'s geometry by the model module's own ``checkpoint_filter_fn`` (timm's position
    embedding resampling), where the sizes differ; unchanged otherwise."""
    import sys

    mismatched = [k for k, v in model.state_dict().items() if k in state and state[k].shape != v.shape]
    if not mismatched:
        return state
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    return filter_fn(state, model) if filter_fn is not None else state


OPEN_CLIP = "open_clip:"


def load_open_clip(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """``open_clip:ARCH`` (random init, or ``weights`` from a local file), ``open_clip:ARCH:PRETRAINED`` (open_clip's
    pretrained tag, from the hub or its cache) or ``open_clip:local-dir:DIR`` (a folder with
    ``open_clip_config.json`` and its weights): a whole open_clip image-text model, in eval mode."""
    try:
        import open_clip
    except ImportError:
        raise CaapError(f"{name!r} needs open_clip (pip install open_clip_torch)") from None
    spec = name[len(OPEN_CLIP):]
    local = spec.startswith("local-dir:")
    arch, _, tag = (spec, "", "") if local else spec.partition(":")
    if arch not in open_clip.list_models() and not local:
        raise OptionError("model", f"{name!r}: unknown open_clip architecture {arch!r}; expected one of "
                                   f"open_clip.list_models() (e.g. ViT-B-32) or local-dir:DIR")
    if tag and weights is not None:
        raise OptionError("weights", f"and a pretrained tag: {name!r} names its weights; give one")
    try:
        with contextlib.nullcontext() if hub_available() else local_files_only():
            model = open_clip.create_model(arch, pretrained=tag or None)
    except Exception as exc:  # hub, cache and file errors come in many types
        raise CaapError(f"could not build {name!r}: {first_line(exc, 160)}") from None
    if weights is not None:
        load_strict(model, load_state_dict(weights), name, weights)
    return model.eval()


def model_data_config(model: nn.Module) -> dict:
    """The preprocessing the model was trained with, timm-style (``input_size``, ``mean``, ``std``,
    ``interpolation``, ``crop_pct``, ``crop_mode``): a Hugging Face model's image-processor config, else timm's
    ``pretrained_cfg`` (:func:`timm.data.resolve_model_data_config`)."""
    from timm.data import resolve_model_data_config

    model = getattr(model, "tower", model)  # a zero-shot classifier: its image tower's preprocessing
    visual = getattr(model, "visual", model)
    if type(visual).__module__.startswith("open_clip") and hasattr(visual, "image_size"):
        size = tuple(visual.image_size) if not isinstance(visual.image_size, int) else (visual.image_size,) * 2
        mean = getattr(visual, "image_mean", None) or OPENAI_MEAN
        std = getattr(visual, "image_std", None) or OPENAI_STD
        return {"input_size": (3, *size), "mean": tuple(mean), "std": tuple(std), "interpolation": "bicubic",
                "crop_pct": 1.0, "crop_mode": "center", "source": "open_clip"}
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "model_type") and not hasattr(model, "pretrained_cfg"):
        vision = getattr(config, "vision_config", None) or config  # CLIPModel / SiglipModel: the image tower's config
        size = getattr(vision, "image_size", 224)
        return hf_data_config(model, int(size[0] if isinstance(size, (list, tuple)) else size))
    cfg = dict(resolve_model_data_config(model))
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)  # the size the model was built for
    if built is not None and tuple(cfg["input_size"][1:]) != tuple(built):
        cfg["input_size"] = (3, *built)  # built for another size (img_size=): preprocess to it
    return cfg


def model_transform(model: nn.Module):
    """The evaluation transform (PIL image -> normalised ``[3, H, W]``) of :func:`model_data_config`."""
    from timm.data import create_transform

    cfg = {k: v for k, v in model_data_config(model).items() if k != "source"}
    return create_transform(**cfg)
