"""Snapshots of everything a method could leave behind on a model: hooks, flags, modes, parameters."""

from __future__ import annotations

import torch
from torch import nn

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_load_state_dict_pre_hooks")
_FLAGS = ("fused_attn", "training", "_attn_implementation")


def snapshot(model: nn.Module) -> dict:
    state = {}
    for name, module in model.named_modules():
        hooks = tuple(len(getattr(module, d, {}) or {}) for d in _HOOK_DICTS)
        flags = tuple(getattr(module, f, None) for f in _FLAGS)
        state[name] = (type(module), hooks, flags, tuple(sorted(vars(module).keys())))
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = getattr(model, "config", None)
    attn_impl = getattr(config, "_attn_implementation", None)
    globals_ = (len(nn.modules.module._global_forward_hooks), len(nn.modules.module._global_forward_pre_hooks),
                len(nn.modules.module._global_backward_hooks))
    return {"modules": state, "params": params, "attn_impl": attn_impl, "globals": globals_,
            "grad": [p.requires_grad for p in model.parameters()], "grad_enabled": torch.is_grad_enabled()}


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modules"] == before["modules"], "a hook, flag, mode or attribute survived"
    assert after["attn_impl"] == before["attn_impl"]
    assert after["globals"] == before["globals"], "a global hook survived"
    assert after["grad"] == before["grad"] and after["grad_enabled"] == before["grad_enabled"]
    assert before["params"].keys() == after["params"].keys()
    for k, v in before["params"].items():
        assert torch.equal(v, after["params"][k]), f"parameter {k} changed"
