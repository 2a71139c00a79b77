"""timm's Eva family (issue 15): EVA-02, DINOv3, the rope ViTs (also rope_mixed) and Perception Encoder, as tiny
random-init configs: the adapter reproduces ``model(x)`` exactly, CAAP equals the naive hook loop on the
model's own forward, every attention method runs, and what an Eva cannot do is refused in one line."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST

from caap import CAAP, methods
from caap.adapters import TimmEvaAdapter, adapt
from caap.errors import UnsupportedModelError
from caap.methods.caap import naive_caap

EVA = ["eva02_tiny_patch14_224", "vit_small_patch16_dinov3", "vit_base_patch16_rope_reg1_gap_256",
       "vit_base_patch16_rope_mixed_224", "vit_pe_core_tiny_patch16_384"]
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2, "num_classes": 10}


def build(name: str):
    import timm
    from archs import _scale

    model = timm.create_model(name, pretrained=False, **TINY)
    return _scale(model, 0)  # the tests' scale: every block and the head matter


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("name", EVA)
def test_the_adapter_is_the_model_and_caap_is_exact(name):
    model = build(name)
    adapter = adapt(model)
    assert isinstance(adapter, TimmEvaAdapter)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(adapter.forward(x), model(x), rtol=0, atol=0)
    att = CAAP(model, layers=[1], batch_size=5).explain(x)
    expected = torch.stack([naive_caap(model, list(model.blocks), x[b : b + 1], torch.zeros_like(x[b : b + 1]), [1],
                                       int(att.target[b]), adapter.num_prefix) for b in range(2)]).view(2, 4, 4)
    assert att.scores.abs().max() > 1e-3
    torch.testing.assert_close(att.scores, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", EVA)
def test_every_attention_method_runs_and_the_model_is_left_as_found(name):
    model = build(name)
    adapter = adapt(model)
    flags = [b.attn.fused_attn for b in model.blocks]
    with adapter.capture_attention() as maps, torch.no_grad():
        inside = adapter.forward(images())
    attentions = maps.get()
    assert len(attentions) == 3 and all(torch.allclose(a.sum(-1), torch.ones(())) for a in attentions)
    with torch.no_grad():
        torch.testing.assert_close(inside, model(images()), rtol=1e-5, atol=1e-5)
    for method in ("raw_attention", "rollout", "gae", "bidirectional", "lrp", "gradcam", "saliency", "occlusion"):
        att = methods.get(method)(model, **FAST.get(method, {})).explain(images(), target=[1, 2])
        assert att.scores.shape[1:] in ((4, 4), (32, 32)) and torch.isfinite(att.scores).all(), method
        assert att.scores.abs().max() > 0, method
    assert [b.attn.fused_attn for b in model.blocks] == flags and not model.training


@pytest.mark.parametrize(("method", "missing"), [("token_occlusion", "token_subsets"), ("tis", "token_subsets"),
                                                 ("caap_fast", "block_view"), ("attnlrp", "linear_block"),
                                                 ("transformer_attribution", "linear_block")])
def test_what_an_eva_cannot_do_is_one_line(method, missing):
    with pytest.raises(UnsupportedModelError, match=missing) as err:
        methods.get(method)(build("eva02_tiny_patch14_224")).explain(images())
    assert "\n" not in str(err.value)
