"""Building models by name: timm names (hub weights or a local file) and the embedded demo models."""

from __future__ import annotations

import os

import timm
import torch
from torch import nn

from caap.adapters.auto import adapt
from caap.adapters.demo import DEMO_NAMES, build_demo_architecture, load_demo_model
from caap.adapters.weights import load_state_dict, load_strict
from caap.errors import CaapError


def create_model(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """A timm model by name: ``weights`` from a local file, else ``pretrained=True`` from the hub.

    ``caap-demo`` (``caap-demo-simple``, ``caap-demo-conjunction``) name the embedded demo models.
    """
    if name in DEMO_NAMES:
        if weights is None:
            return load_demo_model(DEMO_NAMES[name])
        model = build_demo_architecture()
        load_strict(model, load_state_dict(weights), name, weights)
        return model.eval()

    if not timm.is_model(name):
        raise CaapError(
            f"unknown model {name!r}; expected a timm model name such as 'deit_tiny_patch16_224' or caap-demo"
        )
    with torch.device("meta"):  # check the architecture before fetching or reading any weights
        skeleton = timm.create_model(name, pretrained=False)
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
    load_strict(model, state, name, weights)
    return model.eval()
