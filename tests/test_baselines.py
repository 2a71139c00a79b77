"""Baselines against peers (Captum) and independent references; shared contract over every registered method."""

from __future__ import annotations

import pytest
import torch
from archs import GRID, IMG, build, explainable
from conftest import FAST
from modelstate import assert_untouched, snapshot

from caap import methods
from caap.errors import CaapError
from caap.methods.perturbation import patch_masks

PIXEL_PEERS = ["saliency", "input_x_gradient", "integrated_gradients"]


def images(n=2, seed=3):
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(seed))


def close(a, b, tol=1e-4):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.fixture(scope="module")
def model():
    return build("timm_vit")


def test_saliency_and_input_x_gradient_equal_captum(model):
    from captum.attr import InputXGradient, Saliency

    x, t = images(), torch.tensor([2, 7])
    sal = methods.get("saliency")(model).explain(x, target=t)
    close(sal.meta["channels"], Saliency(model).attribute(x, target=t, abs=True))
    close(sal.scores, sal.meta["channels"].amax(1))
    ixg = methods.get("input_x_gradient")(model).explain(x, target=t)
    close(ixg.meta["channels"], InputXGradient(model).attribute(x, target=t))
    assert sal.scores.shape == (2, IMG, IMG)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_middle"])
def test_integrated_gradients_equals_captum(model, method):
    from captum.attr import IntegratedGradients

    x, t = images(), torch.tensor([1, 4])
    ours = methods.get("integrated_gradients")(model, steps=16, method=method, internal_batch_size=10)
    att = ours.explain(x, target=t)
    peer = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=16,
                                                method=method)
    if method == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n with halved ends (they sum to (n-1)/n); ours are the trapezoid
        # rule's 1/(n-1) with halved ends, which sum to 1: the two differ by exactly n/(n-1).
        peer = peer * 16 / 15
    close(att.meta["channels"], peer)
    with torch.no_grad():  # completeness: the map sums to s(x) - s(baseline), up to integration error
        gap = model(x)[torch.arange(2), t] - model(torch.zeros_like(x))[torch.arange(2), t]
    assert torch.allclose(att.scores.sum((1, 2)), gap, rtol=0.1, atol=0.1)


def test_occlusion_equals_captum_on_the_patch_grid(model):
    from captum.attr import Occlusion

    x, t = images(), torch.tensor([0, 5])
    att = methods.get("occlusion")(model, batch_size=7).explain(x, target=t)
    peer = Occlusion(model).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), baselines=0,
                                      target=t)  # [B, 3, H, W], constant on each patch
    close(att.upsample(mode="nearest"), peer[:, 0])
    assert att.scores.shape == (2, *GRID)


def test_input_insertion_equals_a_naive_loop(model):
    x, t = images(1), torch.tensor([3])
    att = methods.get("input_insertion")(model, context="black").explain(x, target=t)
    black = ((0 - torch.tensor((0.485, 0.456, 0.406))) / torch.tensor((0.229, 0.224, 0.225))).view(1, 3, 1, 1)
    context = black.expand_as(x)
    with torch.no_grad():
        base = model(context)[0, 3]
        expected = []
        for i in range(GRID[0]):
            for j in range(GRID[1]):
                composite = context.clone()
                composite[..., 8 * i : 8 * i + 8, 8 * j : 8 * j + 8] = x[..., 8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
                expected.append(model(composite)[0, 3] - base)
    close(att.scores[0].flatten(), torch.stack(expected))


def test_rise_equals_its_formula(model):
    x = images(2)
    rise = methods.get("rise")(model, masks=40, cells=4, probability=0.5, seed=1, batch_size=6)
    att = rise.explain(x, target=[1, 2])
    masks = rise.make_masks(0, 40, (IMG, IMG))  # [N, H, W]
    with torch.no_grad():
        expected = []
        for b, c in enumerate([1, 2]):
            probs = model(x[b : b + 1] * masks[:, None]).softmax(-1)[:, c]  # [N]
            expected.append((probs[:, None, None] * masks).sum(0) / (40 * 0.5))
    close(att.scores, torch.stack(expected))
    assert masks.min() >= 0 and masks.max() <= 1 + 1e-6


def test_smoothgrad_equals_a_naive_loop_and_is_seeded(model):
    x, t = images(1), torch.tensor([6])
    sg = methods.get("smoothgrad")(model, noise_level=0.1, samples=6, seed=3, internal_batch_size=4)
    att = sg.explain(x, target=t)
    gen = torch.Generator().manual_seed(3)
    sigma = 0.1 * (x.max() - x.min())
    total = torch.zeros_like(x)
    for _ in range(6):
        noisy = (x + torch.randn((1, *x.shape), generator=gen)[0] * sigma).requires_grad_(True)
        (g,) = torch.autograd.grad(model(noisy)[0, 6], noisy)
        total += g.abs()
    close(att.meta["channels"], total / 6)
    assert torch.equal(sg.explain(x, target=t).scores, att.scores)


def test_smoothgrad_equals_captums_noise_tunnel_on_the_same_draws(model, monkeypatch):
    """Captum's ``NoiseTunnel(Saliency(abs=True), nt_type="smoothgrad")`` given the noise caap draws (Captum's own
    ``torch.normal`` draws cannot be seeded apart from the global generator): the same maps."""
    from captum.attr import NoiseTunnel, Saliency

    x, t = images(1), torch.tensor([4])
    sigma = float(0.2 * (x.max() - x.min()))
    draws = torch.randn((5, *x.shape[1:]), generator=torch.Generator().manual_seed(7))  # caap's draws, seed 7

    def same_noise(input, stdev, n):
        assert n == 5 and stdev == sigma
        return input.repeat_interleave(n, dim=0) + draws.to(input) * stdev

    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(same_noise))
    theirs = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=5, stdevs=sigma, target=t,
                                                    abs=True)
    ours = methods.get("smoothgrad")(model, noise_level=0.2, samples=5, seed=7).explain(x, target=t)
    close(ours.meta["channels"], theirs)
    close(ours.scores, theirs.amax(1))


def test_patch_masks_tile_the_image():
    m = patch_masks((4, 4), (32, 32))
    assert m.shape == (16, 32, 32) and torch.equal(m.sum(0), torch.ones(32, 32, dtype=torch.long))
    assert m[5, 8:16, 8:16].all() and m[5].sum() == 64


BASELINES = ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion", "input_insertion",
             "rise", "raw_attention", "rollout", "gae", "gradcam", "lrp"]


@pytest.mark.parametrize("name", methods.available())  # every registered method, CAAP's modes included
@pytest.mark.parametrize("arch", ["timm_deit_distilled", "timm_registers", "timm_avg_fc_norm", "hf_dinov2"])
def test_every_method_runs_on_every_architecture_and_leaves_no_trace(name, arch):
    model = build(arch)
    model.train()
    before = snapshot(model)
    explainer = methods.get(name)(explainable(arch, model), **FAST.get(name, {}))
    att = explainer.explain(images(2), target=[1, 2])
    size = GRID if explainer.resolution == "patch" else (IMG, IMG)
    assert att.scores.shape == (2, *size) and att.target.tolist() == [1, 2]
    assert explainer.attribute(images(2)).shape == (2, 1, IMG, IMG)
    assert torch.equal(att.scores, explainer.explain(images(2), target=[1, 2]).scores)  # deterministic
    assert_untouched(model, before)


@pytest.mark.parametrize("name", methods.available())
def test_state_restored_when_a_method_raises(name, monkeypatch):
    model = build("timm_vit")
    before = snapshot(model)
    original = type(model.head).forward
    calls = {"n": 0}

    def failing(self, x):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("boom")
        return original(self, x)

    monkeypatch.setattr(type(model.head), "forward", failing)
    with pytest.raises(RuntimeError, match="boom"):
        methods.get(name)(model, **FAST.get(name, {})).explain(images(2))
    monkeypatch.undo()
    assert_untouched(model, before)


def test_registry_metadata():
    assert set(BASELINES) | {"caap"} <= set(methods.available())
    assert methods.get("saliency").needs_grad and not methods.get("occlusion").needs_grad
    assert methods.get("rise").resolution == "pixel" and methods.get("occlusion").resolution == "patch"


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("integrated_gradients", {"steps": 1}, "steps must be an int >= 2"),
    ("integrated_gradients", {"method": "simpson"}, "unknown integration method 'simpson'"),
    ("smoothgrad", {"samples": 0}, "samples must be a positive int"),
    ("rise", {"probability": 0}, r"probability must be in \(0, 1\]"),
    ("occlusion", {"batch_size": 0}, "batch_size must be a positive int or None"),
    ("input_insertion", {"context": "fog"}, "unknown context 'fog'"),
])
def test_bad_options(model, name, kwargs, message):
    with pytest.raises(CaapError, match=message):
        methods.get(name)(model, **kwargs)


def _manual_timm_forward(model, x):
    """An independent re-implementation of a timm ViT forward that keeps every attention matrix."""
    z = model.patch_embed(x)
    z = torch.cat([model.cls_token.expand(len(x), -1, -1), z], 1) + model.pos_embed  # [B, N, D]
    attentions = []
    for blk in model.blocks:
        a = blk.attn
        y = blk.norm1(z)
        b, n, d = y.shape
        q, k, v = (y @ a.qkv.weight.T + a.qkv.bias).view(b, n, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        probs = ((q @ k.transpose(-1, -2)) * a.head_dim**-0.5).softmax(-1)  # [B, H, N, N]
        attentions.append(probs)
        z = z + (probs @ v).transpose(1, 2).reshape(b, n, d) @ a.proj.weight.T + a.proj.bias
        z = z + blk.mlp(blk.norm2(z))
    return model.head(model.norm(z)[:, 0]), attentions


def test_attention_methods_equal_the_papers_formulas(model):
    x, t = images(), torch.tensor([3, 8])
    xr = x.clone().requires_grad_(True)
    logits, attentions = _manual_timm_forward(model, xr)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad(logits[torch.arange(2), t].sum(), attentions)
    attentions = [a.detach() for a in attentions]
    n = attentions[0].shape[-1]
    eye = torch.eye(n)
    raw = attentions[-1].mean(1)[:, 0, 1:]
    roll = eye
    gae = eye.expand(2, n, n)
    for a, g in zip(attentions, grads, strict=True):
        step = 0.5 * eye + 0.5 * a.mean(1)
        step = step / step.sum(-1, keepdim=True)
        roll = step @ roll
        gae = gae + (g * a).clamp(min=0).mean(1) @ gae
    for name, expected in [("raw_attention", raw), ("rollout", roll[:, 0, 1:]), ("gae", gae[:, 0, 1:])]:
        att = methods.get(name)(model).explain(x, target=t)
        close(att.scores.flatten(1), expected, tol=1e-5)


def test_attention_capture_restores_flags_and_fails_loudly():
    from archs import generic_adapter

    from caap.adapters import adapt
    from caap.errors import UnsupportedModelError

    model = build("timm_vit")
    flags = [blk.attn.fused_attn for blk in model.blocks]
    with pytest.raises(RuntimeError, match="inside"):
        with adapt(model).capture_attention():
            assert not any(blk.attn.fused_attn for blk in model.blocks)
            raise RuntimeError("inside")
    assert [blk.attn.fused_attn for blk in model.blocks] == flags
    hf = build("hf_vit")
    impl = hf.config._attn_implementation
    with adapt(hf).capture_attention() as maps:  # HFViTAdapter declares AttentionCapture
        with pytest.raises(UnsupportedModelError, match="saw 0 of 4 blocks"):
            maps.get()  # no forward yet
    assert hf.config._attn_implementation == impl
    with pytest.raises(UnsupportedModelError, match="GenericAdapter for TorchViT has no capture_attention"):
        methods.get("rollout")(generic_adapter(build("generic_torch"))).explain(images())


def test_gradcam_equals_the_grad_cam_package(model):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x, t = images(), [2, 6]

    def tokens_to_map(z):  # [B, N, D] -> [B, D, gh, gw], prefix dropped
        return z[:, 1:].reshape(z.shape[0], *GRID, z.shape[-1]).permute(0, 3, 1, 2)

    with GradCAM(model=model, target_layers=[model.blocks[-2]], reshape_transform=tokens_to_map) as cam:
        peer = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in t])  # [B, H, W] in [0, 1]
    ours = methods.get("gradcam")(model).explain(x, target=t)
    assert ours.scores.shape == (2, *GRID)
    # grad-cam min-max scales and resizes per layer, then min-max scales the mean over layers again
    scaled = scale_cam_image(scale_cam_image(ours.scores.numpy(), target_size=(IMG, IMG)))
    close(torch.from_numpy(scaled), torch.from_numpy(peer), tol=1e-4)


def test_lrp_equals_gradient_x_input_with_detached_attention_and_norms(model):
    x, t = images(), torch.tensor([1, 9])

    def ln(mod, v):
        std = (v.var(-1, keepdim=True, unbiased=False) + mod.eps).sqrt().detach()
        return (v - v.mean(-1, keepdim=True)) / std * mod.weight + mod.bias

    z0 = (torch.cat([model.cls_token.expand(2, -1, -1), model.patch_embed(x)], 1) + model.pos_embed).detach()
    z0.requires_grad_(True)
    z = z0
    for blk in model.blocks:
        a = blk.attn
        y = ln(blk.norm1, z)
        b, n, d = y.shape
        q, k, v = (y @ a.qkv.weight.T + a.qkv.bias).view(b, n, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        probs = ((q @ k.transpose(-1, -2)) * a.head_dim**-0.5).softmax(-1).detach()
        z = z + (probs @ v).transpose(1, 2).reshape(b, n, d) @ a.proj.weight.T + a.proj.bias
        z = z + blk.mlp(ln(blk.norm2, z))
    logits = model.head(ln(model.norm, z)[:, 0])
    (g,) = torch.autograd.grad(logits[torch.arange(2), t].sum(), z0)
    expected = (z0 * g).sum(-1)[:, 1:].detach()
    att = methods.get("lrp")(model).explain(x, target=t)
    close(att.scores.flatten(1), expected, tol=1e-5)


def test_lrp_on_hugging_face_equals_a_manual_reference():
    hf = build("hf_vit")
    vit = hf.vit
    layers = getattr(vit, "layers", None) or vit.encoder.layer
    if not hasattr(layers[0].attention, "q_proj"):
        pytest.skip("this reference follows the transformers 5 ViT layout")
    x, t = images(), torch.tensor([0, 3])

    def ln(mod, v):
        std = (v.var(-1, keepdim=True, unbiased=False) + mod.eps).sqrt().detach()
        return (v - v.mean(-1, keepdim=True)) / std * mod.weight + mod.bias

    z0 = vit.embeddings(x).detach().requires_grad_(True)
    z = z0
    for layer in layers:
        att = layer.attention
        y = ln(layer.layernorm_before, z)
        b, n, d = y.shape
        q, k, v = (p(y).view(b, n, hf.config.num_attention_heads, -1).transpose(1, 2)
                   for p in (att.q_proj, att.k_proj, att.v_proj))
        probs = ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(-1).detach()
        z = z + att.o_proj((probs @ v).transpose(1, 2).reshape(b, n, d))
        z = z + layer.mlp(ln(layer.layernorm_after, z))
    logits = hf.classifier(ln(vit.layernorm, z)[:, 0])
    with torch.no_grad():
        torch.testing.assert_close(logits, hf(pixel_values=x).logits, rtol=1e-4, atol=1e-4)
    (g,) = torch.autograd.grad(logits[torch.arange(2), t].sum(), z0)
    expected = (z0 * g).sum(-1)[:, 1:].detach()
    close(methods.get("lrp")(hf).explain(x, target=t).scores.flatten(1), expected, tol=1e-5)
