"""No hook, flag or mode survives a call, including one that raises (STYLE 5)."""

from __future__ import annotations

import pytest
import torch
from archs import ARCHS, IMG, PREFIX, block_list, build, explainable, logits_fn
from modelstate import assert_untouched, snapshot

from caap import CAAP
from caap.methods.caap import naive_caap


class Boom(RuntimeError):
    pass


def x2():
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_caap_leaves_model_as_found(name):
    model = build(name)
    model.train()  # a model in training mode must come back in training mode
    before = snapshot(model)
    CAAP(explainable(name, model), layers=[1, 2]).explain(x2(), all_classes=True)
    assert_untouched(model, before)


@pytest.mark.parametrize("where", ["score", "block"])
def test_caap_restores_state_when_it_raises(where, monkeypatch):
    model = build("timm_vit")
    model.blocks[0].train()  # mixed modes are restored one by one
    before = snapshot(model)
    calls = {"n": 0}

    def score(logits):
        calls["n"] += 1
        if calls["n"] == 3:  # source, context, then the first patched chunk
            raise Boom("score failed")
        return logits

    if where == "block":
        original = type(model.blocks[2]).forward

        def failing(self, x, *args, **kwargs):
            if x.shape[0] > 2:  # only in a patched chunk
                raise Boom("block failed")
            return original(self, x, *args, **kwargs)

        monkeypatch.setattr(type(model.blocks[2]), "forward", failing)
    explainer = CAAP(model, layers=[1, 2], score=score if where == "score" else "logit")
    with pytest.raises(Boom):
        explainer.explain(x2())
    monkeypatch.undo()
    assert_untouched(model, before)


def test_naive_reference_removes_its_hooks_when_it_raises():
    name = "hf_vit"
    model = build(name)
    before = snapshot(model)

    def score(logits):
        raise Boom("score failed")

    x = x2()
    with pytest.raises(Boom):
        naive_caap(logits_fn(name, model), block_list(name, model), x[:1], x[1:], [1, 2], 0, PREFIX[name], score)
    assert_untouched(model, before)


def test_the_snapshot_catches_leftovers():
    model = build("timm_vit")
    before = snapshot(model)
    handle = model.blocks[1].register_forward_pre_hook(lambda m, a: None)
    with pytest.raises(AssertionError, match="hook"):
        assert_untouched(model, before)
    handle.remove()
    model.blocks[0].attn.fused_attn = not model.blocks[0].attn.fused_attn
    with pytest.raises(AssertionError):
        assert_untouched(model, before)
    model.blocks[0].attn.fused_attn = not model.blocks[0].attn.fused_attn
    model.eval()
    model.head.train()
    with pytest.raises(AssertionError):
        assert_untouched(model, before)
