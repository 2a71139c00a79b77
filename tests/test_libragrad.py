"""LibraGrad as its authors compute it (issue 34): on the real DeiT-Tiny against the authors' timm fork
(benchmarks/libragrad_reference.py), and on tiny random-init ViTs against a naive re-implementation written here on
timm's own modules (forward hooks, not caap's linear forward)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEIT_TINY, needs_real_data

from caap import methods
from caap.adapters.tiny import timm_vit
from caap.errors import CaapError

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "benchmarks" / "results" / "libragrad_reference.npz"
INPUTS = ROOT.parent / "shared" / "reference" / "deit_tiny_dev8" / "inputs.npy"


@needs_real_data
@pytest.mark.skipif(not INPUTS.is_file(), reason="no reference inputs")
@pytest.mark.parametrize(("softmax", "key"), [(True, "maps"), (False, "logit_maps")])
def test_the_real_deit_tiny_equals_the_authors_fork(softmax, key):
    """The authors' ``LibraGrad`` preset in their fork's DeiT-Tiny (probability, and the logit of their ``WO-Head``
    ablation), on the 8 reference inputs: measured max 4e-7 (probability maps up to 0.29) and 2e-6 (logit maps up to
    1.4), float32 through 12 blocks in two implementations; the bound is 1e-5 relative to the largest value."""
    from caap.adapters import create_model

    ref = np.load(REFERENCE)
    model = create_model("deit_tiny_patch16_224", DEIT_TINY)
    inputs = torch.from_numpy(np.load(INPUTS))
    att = methods.get("libragrad")(model, softmax=softmax).explain(inputs, target=ref["targets"].tolist())
    expected = ref[key]
    np.testing.assert_allclose(att.scores.numpy(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def naive_libragrad(model, x: torch.Tensor, target: list[int], softmax: bool) -> torch.Tensor:
    """LibraGrad × input written on timm's modules: each LayerNorm's variance, each GELU's gate and each
    attention's queries and keys detached by replacing the modules' forwards, then plain autograd."""
    def layer_norm(self, h):
        mean = h.mean(-1, keepdim=True)
        var = ((h - mean) ** 2).mean(-1, keepdim=True).detach()
        return (h - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias

    def gelu(self, h):
        return h * (0.5 * (1 + torch.erf(h / 2 ** 0.5))).detach()

    def attention(self, h, attn_mask=None, **kwargs):
        b, n, c = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        a = ((q.detach() @ k.detach().transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))

    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.forward = types.MethodType(layer_norm, module)
        elif isinstance(module, torch.nn.GELU):
            module.forward = types.MethodType(gelu, module)
        elif type(module).__name__ == "Attention":
            module.forward = types.MethodType(attention, module)
    z0 = model.norm_pre(model._pos_embed(model.patch_embed(x))).detach().requires_grad_(True)
    logits = model.forward_head(model.norm(model.blocks(z0)))
    scores = F.softmax(logits, -1) if softmax else logits
    (grad,) = torch.autograd.grad(scores[torch.arange(len(target)), target].sum(), z0)
    return (z0 * grad).sum(-1)[:, model.num_prefix_tokens:].detach()


@pytest.mark.parametrize("softmax", [True, False])
def test_a_tiny_vit_equals_the_naive_rules(softmax):
    """The same rules on another path (timm's modules with detached pieces): equal; the forward unchanged."""
    torch.manual_seed(0)
    model = timm_vit().eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    att = methods.get("libragrad")(model, softmax=softmax).explain(x, target=[0, 3, 7])
    with torch.no_grad():
        logits = model(x)
    naive_model = timm_vit().eval()
    naive_model.load_state_dict(model.state_dict())
    expected = naive_libragrad(naive_model, x, [0, 3, 7], softmax).reshape(att.scores.shape)
    # two float32 paths through the tiny ViT (sums in another order): maps up to 3e-3 (probability) and 3e-2
    # (logit); atol 1e-6 is a few hundred float32 ulps of those, rtol 1e-4 the rest, on any CPU
    torch.testing.assert_close(att.scores, expected, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits)  # the model's own forward is untouched


def test_it_differs_from_attnlrp_where_the_rules_do():
    """LibraGrad stops the gradient at the queries and keys and keeps the values' whole; AttnLRP passes a quarter
    and a half: on the same logit the maps differ (a check that the rules are LibraGrad's own, not AttnLRP's)."""
    torch.manual_seed(0)
    model = timm_vit().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    libra = methods.get("libragrad")(model, softmax=False).explain(x, target=[1, 2]).scores
    lrp = methods.get("attnlrp")(model).explain(x, target=[1, 2]).scores
    assert (libra - lrp).abs().max() > 1e-4


def test_bad_options_name_the_value():
    with pytest.raises(CaapError, match="softmax must be true or false, got 'yes'"):
        methods.get("libragrad")(timm_vit(), softmax="yes")


def test_cp_lrp_in_attnlrp_is_libragrads_logit_variant():
    """AttnLRP's CP-LRP option (the attention a constant) and LibraGrad's logit variant are the same four rules:
    equal maps; the authors' uniform rule differs."""
    torch.manual_seed(0)
    model = timm_vit().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    cp = methods.get("attnlrp")(model, attention="constant").explain(x, target=[4, 5]).scores
    libra = methods.get("libragrad")(model, softmax=False).explain(x, target=[4, 5]).scores
    torch.testing.assert_close(cp, libra)
    with pytest.raises(CaapError, match="attention must be one of uniform, constant, got 'half'"):
        methods.get("attnlrp")(model, attention="half")
