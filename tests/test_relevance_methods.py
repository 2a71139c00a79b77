"""Transformer attribution, AttnLRP and extremal perturbations against independent references: the rules
written out with autograd as the authors' modules do, the ``lxt`` package's explicit AttnLRP rules, and
TorchRay's ``extremal_perturbation``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from archs import ARCHS, GRID, IMG, build, explainable

from caap import methods
from caap.adapters import adapt
from caap.errors import CaapError, UnsupportedModelError
from caap.methods.relevance import linear_forward

LINEAR = [a for a in ARCHS if a not in ("timm_map_pool", "generic_torch")]


def images(n: int = 2, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(7)).to(dtype)


@pytest.mark.parametrize("arch", LINEAR)
def test_the_linear_forward_is_the_model(arch):
    model = build(arch)
    adapter = adapt(model)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(linear_forward(adapter, adapter.embed(x)), adapter.forward(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("arch", "missing"), [("timm_map_pool", "linear_head"), ("generic_torch", "linear_block")])
@pytest.mark.parametrize("name", ["transformer_attribution", "attnlrp"])
def test_models_without_linear_layers_get_one_line(arch, missing, name):
    with pytest.raises(UnsupportedModelError, match=missing):
        methods.get(name)(explainable(arch, build(arch)))


# --- transformer attribution: the authors' rules, each written as their modules do it (autograd) -----------
def _safe(a, b):
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).to(den.dtype) * 1e-9
    return a / den * b.ne(0).to(b.dtype)


def _z_rule(fn, inputs, relevance):
    inputs = [t.detach().requires_grad_(True) for t in inputs]
    with torch.enable_grad():
        z = fn(*inputs)
        grads = torch.autograd.grad(z, inputs, _safe(relevance, z))
    return [t.detach() * g for t, g in zip(inputs, grads, strict=True)]


def _linear_ab(x, weight, relevance):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        z1, z2 = F.linear(xp, weight.clamp(min=0)), F.linear(xn, weight.clamp(max=0))
        s = _safe(relevance, z1 + z2)
        return xp * torch.autograd.grad(z1, xp, s, retain_graph=True)[0] + xn * torch.autograd.grad(z2, xn, s)[0]


def _add(a, b, relevance):
    ra, rb = _z_rule(torch.add, [a, b], relevance)
    sa, sb = ra.sum(), rb.sum()
    fa = _safe(sa.abs(), sa.abs() + sb.abs()) * relevance.sum()
    fb = _safe(sb.abs(), sa.abs() + sb.abs()) * relevance.sum()
    return ra * _safe(fa, sa), rb * _safe(fb, sb)


def _reference_ta(model, x, target):
    """One image through a timm ViT's modules, relevance by the rules above, rollout of (∇A ⊙ R_A)+."""
    heads = model.blocks[0].attn.num_heads
    z = model.patch_embed(x)
    z = model._pos_embed(z).detach().requires_grad_(True)
    saved, zs = [], []
    with torch.enable_grad():
        for blk in model.blocks:
            a = blk.attn
            y = blk.norm1(z)
            q, k, v = a.qkv(y).reshape(1, -1, 3, heads, a.head_dim).permute(2, 0, 3, 1, 4)
            attn = torch.einsum("bhid,bhjd->bhij", q, k).mul(a.scale).softmax(-1)
            o = torch.einsum("bhij,bhjd->bhid", attn, v).transpose(1, 2).flatten(2)
            p = a.proj(o)
            h = z + p
            g = blk.mlp.act(blk.mlp.fc1(blk.norm2(h)))
            m = blk.mlp.fc2(g)
            saved.append(dict(z=z, y=y, q=q, k=k, v=v, attn=attn, o=o, p=p, h=h, y2=blk.norm2(h), g=g, m=m))
            z = h + m
            zs.append(z)
        feat = model.norm(z)[:, 0]
        logits = model.head(feat)
        grads = torch.autograd.grad(logits[0, target], [s["attn"] for s in saved])
    r = _linear_ab(feat, model.head.weight, F.one_hot(torch.tensor([target]), logits.shape[1]).double())
    r = torch.cat([r[:, None], torch.zeros_like(z[:, 1:])], 1)
    cams = []
    for blk, s in zip(reversed(model.blocks), reversed(saved), strict=True):
        r1, r2 = _add(s["h"], s["m"], r)
        r2 = _linear_ab(s["y2"], blk.mlp.fc1.weight, _linear_ab(s["g"], blk.mlp.fc2.weight, r2))
        r = s["h"] * (_safe(r1, s["h"]) + _safe(r2, s["h"]))
        r1, r2 = _add(s["z"], s["p"], r)
        r2 = _linear_ab(s["o"], blk.attn.proj.weight, r2).unflatten(-1, (heads, -1)).transpose(1, 2)
        r_attn, r_v = (t / 2 for t in _z_rule(lambda p_, v_: torch.einsum("bhij,bhjd->bhid", p_, v_),
                                                [s["attn"], s["v"]], r2))
        cams.insert(0, r_attn)
        r_q, r_k = (t / 2 for t in _z_rule(lambda q_, k_: torch.einsum("bhid,bhjd->bhij", q_, k_),
                                            [s["q"], s["k"]], r_attn))
        r_qkv = torch.stack([r_q, r_k, r_v]).permute(1, 3, 0, 2, 4).flatten(2)
        r2 = _linear_ab(s["y"], blk.attn.qkv.weight, r_qkv)
        r = s["z"] * (_safe(r1, s["z"]) + _safe(r2, s["z"]))
    joint = None
    for g, c in zip(grads, cams, strict=True):
        layer = (g * c).clamp(min=0).mean(1) + torch.eye(g.shape[-1], dtype=g.dtype)
        joint = layer if joint is None else layer @ joint
    return joint[0, 0, 1:].reshape(GRID)


def test_transformer_attribution_equals_the_rules_written_as_the_authors_modules():
    """float64, so that the comparison is not limited by the method's float32 sensitivity (docs/BASELINES.md)."""
    model = build("timm_vit").double()
    x = images(2, torch.float64)
    got = methods.get("transformer_attribution")(model).explain(x, target=[3, 8]).scores
    for i, t in enumerate([3, 8]):
        expected = _reference_ta(model, x[i : i + 1], t).float()
        torch.testing.assert_close(got[i], expected, rtol=1e-5, atol=1e-6 * expected.abs().max().item())


@pytest.mark.parametrize("arch", LINEAR)
def test_transformer_attribution_is_per_image_on_every_linear_adapter(arch):
    model = build(arch).double()
    x = images(3, torch.float64)
    ta = methods.get("transformer_attribution")(model, start_layer=1)
    batch = ta.explain(x, target=[0, 1, 2]).scores
    one = ta.explain(x[1:2], target=[1]).scores
    torch.testing.assert_close(batch[1:2], one, rtol=1e-6, atol=1e-9)
    assert (batch >= 0).all() and batch.abs().sum() > 0


def test_transformer_attribution_options():
    with pytest.raises(CaapError, match=r"start_layer must be an int in \[0, 3\]"):
        methods.get("transformer_attribution")(build("timm_vit"), start_layer=4)


# --- AttnLRP against lxt's explicit rules ----------------------------------------------------------------
def lxt_attnlrp(model, x, target, eps=1e-14):
    """AttnLRP relevance at the token embeddings from lxt's explicit rule functions on a manual timm forward
    (every stabiliser set to ``eps``)."""
    lf = pytest.importorskip("lxt.explicit.functional")
    from lxt.explicit.rules import identity

    z0 = adapt(model).embed(x).detach().requires_grad_(True)
    z = z0
    for blk in model.blocks:
        a = blk.attn
        y = lf.layer_norm_grad_fn.apply(z, blk.norm1.weight, blk.norm1.bias, blk.norm1.eps, eps)
        q, k, v = lf.linear_epsilon(y, a.qkv.weight, a.qkv.bias, epsilon=eps).unflatten(
            -1, (3, a.num_heads, a.head_dim)).permute(2, 0, 3, 1, 4).unbind(0)
        dots = lf.mul2(lf.matmul(q, k.transpose(-2, -1), epsilon=eps), torch.tensor(a.scale, dtype=x.dtype))
        o = lf.matmul(lf.softmax(dots, -1), v, epsilon=eps).transpose(1, 2).flatten(2)
        z = lf.add2(z, lf.linear_epsilon(o, a.proj.weight, a.proj.bias, epsilon=eps), epsilon=eps)
        y = lf.layer_norm_grad_fn.apply(z, blk.norm2.weight, blk.norm2.bias, blk.norm2.eps, eps)
        g = identity(blk.mlp.act, lf.linear_epsilon(y, blk.mlp.fc1.weight, blk.mlp.fc1.bias, epsilon=eps))
        z = lf.add2(z, lf.linear_epsilon(g, blk.mlp.fc2.weight, blk.mlp.fc2.bias, epsilon=eps), epsilon=eps)
    seq = lf.layer_norm_grad_fn.apply(z, model.norm.weight, model.norm.bias, model.norm.eps, eps)
    logits = lf.linear_epsilon(seq[:, 0], model.head.weight, model.head.bias, epsilon=eps)
    chosen = F.one_hot(torch.as_tensor(target), logits.shape[1]).to(logits.dtype)
    logits.backward((logits * chosen).detach())  # relevance starts as the target's logit
    return z0.grad.sum(-1)[:, model.num_prefix_tokens:]


def test_attnlrp_equals_lxt_explicit_rules():
    model = build("timm_vit").double()
    x = images(2, torch.float64)
    expected = lxt_attnlrp(model, x, [3, 8]).float().reshape(-1, *GRID)
    got = methods.get("attnlrp")(model).explain(x, target=[3, 8]).scores
    scale = expected.flatten(1).abs().amax(1)[:, None, None]
    torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=1e-6)


# --- extremal perturbations against TorchRay ------------------------------------------------------------
@pytest.mark.parametrize(("areas", "reward"), [((0.1,), "logit"), ((0.05, 0.3), "contrastive")])
def test_extremal_perturbation_equals_torchray(areas, reward):
    """One image, 15 steps: the optimisation amplifies float rounding (the gap grows ~10x per 10 steps), so
    the comparison stops early and allows 1e-4."""
    ep = pytest.importorskip("torchray.attribution.extremal_perturbation")
    model = build("timm_vit")
    x = images(1)
    ours = methods.get("extremal_perturbation")(model, area=",".join(map(str, areas)), steps=15, smoothing=9.0,
                                                step=4, reward=reward)
    got = ours.masks(x, torch.tensor([3]))[0]
    reward_fn = ep.contrastive_reward if reward == "contrastive" else ep.simple_reward
    expected, _ = ep.extremal_perturbation(copy.deepcopy(model), x, 3, areas=list(areas), max_iter=15, sigma=9.0,
                                           step=4, reward_func=reward_fn)
    torch.testing.assert_close(got, expected[:, 0], rtol=0, atol=1e-4)
    att = ours.explain(x, target=[3])
    assert att.meta["area"] == list(areas) and att.scores.shape == (1, IMG, IMG)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"area": 1.5}, r"area must be a share in \(0, 1\)"), ({"area": "0.1,x"}, "area must be"),
    ({"steps": 0}, "steps must be a positive int"), ({"levels": 1}, "levels must be at least 2"),
    ({"reward": "prob"}, "reward must be 'logit' or 'contrastive'"), ({"jitter": "yes"}, "jitter must be"),
])
def test_extremal_perturbation_options(kwargs, message):
    with pytest.raises(CaapError, match=message):
        methods.get("extremal_perturbation")(build("timm_vit"), **kwargs)
