"""``lrp`` (conservative propagation, Ali et al. ICML 2022) against lxt's CP-LRP on torchvision's ViT.

lxt's efficient CP-LRP patches torchvision's ``VisionTransformer`` classes: no gradient through the attention
scores (query and key detached), LayerNorm's standard deviation detached, and the identity rule on GELU. Ours
keeps GELU's gradient, so the two coincide exactly where the activation's gradient *is* its identity rule: ReLU
(``relu(x)/x`` is its derivative). The test builds a torchvision ViT with ReLU MLPs, copies its weights into the
same timm ViT, and compares our map with lxt's gradient × input at the same place (the token embeddings after
the position embedding), patch by patch. A different rule on attention, LayerNorm or the embeddings would fail it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from caap import methods

torchvision = pytest.importorskip("torchvision")
lxt = pytest.importorskip("lxt")

DIM, DEPTH, HEADS, PATCH, SIZE, CLASSES = 32, 2, 4, 8, 32, 10


def torchvision_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=SIZE, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS, hidden_dim=DIM,
                              mlp_dim=2 * DIM, num_classes=CLASSES)
    for layer in model.encoder.layers:
        layer.mlp[1] = nn.ReLU()
    with torch.no_grad():  # non-trivial class token, position embedding and head
        model.class_token.normal_(0, 0.5)
        model.encoder.pos_embedding.normal_(0, 0.5)
        model.heads.head.weight.normal_(0, 0.5)
    return model.eval()


def timm_copy(tv: nn.Module) -> nn.Module:
    """The same network as a timm ViT (ReLU MLPs), weights copied module by module."""
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, patch_size=PATCH,
                              embed_dim=DIM, depth=DEPTH, num_heads=HEADS, mlp_ratio=2, num_classes=CLASSES,
                              act_layer=nn.ReLU).eval()
    state = {"cls_token": tv.class_token, "pos_embed": tv.encoder.pos_embedding,
             "patch_embed.proj.weight": tv.conv_proj.weight, "patch_embed.proj.bias": tv.conv_proj.bias,
             "norm.weight": tv.encoder.ln.weight, "norm.bias": tv.encoder.ln.bias,
             "head.weight": tv.heads.head.weight, "head.bias": tv.heads.head.bias}
    for i, layer in enumerate(tv.encoder.layers):
        b = f"blocks.{i}."
        state.update({
            b + "norm1.weight": layer.ln_1.weight, b + "norm1.bias": layer.ln_1.bias,
            b + "attn.qkv.weight": layer.self_attention.in_proj_weight,
            b + "attn.qkv.bias": layer.self_attention.in_proj_bias,
            b + "attn.proj.weight": layer.self_attention.out_proj.weight,
            b + "attn.proj.bias": layer.self_attention.out_proj.bias,
            b + "norm2.weight": layer.ln_2.weight, b + "norm2.bias": layer.ln_2.bias,
            b + "mlp.fc1.weight": layer.mlp[0].weight, b + "mlp.fc1.bias": layer.mlp[0].bias,
            b + "mlp.fc2.weight": layer.mlp[3].weight, b + "mlp.fc2.bias": layer.mlp[3].bias})
    model.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    return model


def lxt_cp_lrp_map() -> dict:
    """lxt's own CP-LRP patch map for torchvision's ViT (``lxt/efficient/models/vit_torch.py``). lxt 2.1's
    ``lxt.efficient`` package imports its BERT patches, which need a transformers function that transformers 5
    removed; its rule and patch modules do not, so they are loaded from their files under a bare package."""
    root = Path(lxt.__file__).parent / "efficient"
    previous = sys.modules.get("lxt.efficient")
    package = types.ModuleType("lxt.efficient")
    package.__path__ = [str(root)]
    sys.modules["lxt.efficient"] = package
    try:
        importlib.import_module("lxt.efficient.rules")
        importlib.import_module("lxt.efficient.patches")
        spec = importlib.util.spec_from_file_location("lxt_vit_torch", root / "models" / "vit_torch.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.cp_LRP
    finally:
        if previous is None:
            sys.modules.pop("lxt.efficient", None)
        else:
            sys.modules["lxt.efficient"] = previous


@contextlib.contextmanager
def lxt_cp_lrp():
    """lxt's CP-LRP patches on torchvision's ViT classes (which are torch.nn's), undone on exit; applied as lxt's
    ``monkey_patch`` applies a map (each entry patches its class)."""
    patch_map = lxt_cp_lrp_map()
    classes = (nn.GELU, nn.LayerNorm, nn.MultiheadAttention)
    saved = {c: dict(vars(c)) for c in classes}
    try:
        for target, patch in patch_map.items():
            assert patch(target), f"lxt did not patch {target.__name__}"
        yield
    finally:
        for c in classes:
            for name in set(vars(c)) - set(saved[c]):
                delattr(c, name)
            for name in ("forward", "original_forward"):
                if name in saved[c]:
                    setattr(c, name, saved[c][name])


def lxt_relevance(tv: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """lxt's CP-LRP relevance at the token embeddings (after the position embedding), per patch ``[gh, gw]``."""
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["z0"] = output

    handle = tv.encoder.dropout.register_forward_hook(keep)
    try:
        with lxt_cp_lrp():
            logits = tv(x.clone().requires_grad_(True))
            logits[0, target].backward()
    finally:
        handle.remove()
    z0 = captured["z0"]
    grid = SIZE // PATCH
    return (z0.grad * z0).sum(-1)[0, 1:].detach().reshape(grid, grid)


def test_the_copied_timm_vit_is_the_torchvision_vit():
    tv = torchvision_vit()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(timm_copy(tv)(x), tv(x), rtol=1e-5, atol=1e-5)


def test_lrp_equals_lxt_cp_lrp_on_a_relu_vit():
    tv = torchvision_vit()
    model = timm_copy(tv)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    targets = [3, 7]
    ours = methods.get("lrp")(model).explain(x, targets, progress=False).scores
    for i, target in enumerate(targets):
        expected = lxt_relevance(tv, x[i : i + 1], target)
        scale = expected.abs().max()
        assert scale > 0
        torch.testing.assert_close(ours[i], expected, rtol=0, atol=1e-5 * float(scale))
    assert nn.GELU.forward is not None and not hasattr(nn.GELU, "original_forward")  # the patches are undone


def test_lxt_keeps_gelus_identity_rule_where_ours_keeps_its_gradient():
    """With GELU the rules differ (lxt: GELU(x)/x; ours: GELU'(x)), so the comparison above can fail."""
    tv = torchvision_vit()
    for layer in tv.encoder.layers:
        layer.mlp[1] = nn.GELU()
    model = timm_copy(tv)
    for block in model.blocks:
        block.mlp.act = nn.GELU()
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    ours = methods.get("lrp")(model).explain(x, [5], progress=False).scores[0]
    expected = lxt_relevance(tv, x, 5)
    assert (ours - expected).abs().max() > 1e-3 * expected.abs().max()


def test_without_lxts_patches_plain_gradient_x_input_differs(monkeypatch):
    """The patches matter: without them lxt's relevance is plain gradient × input, far from ``lrp``."""
    tv = torchvision_vit()
    model = timm_copy(tv)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    ours = methods.get("lrp")(model).explain(x, [3], progress=False).scores[0]
    monkeypatch.setattr(sys.modules[__name__], "lxt_cp_lrp", contextlib.nullcontext)
    plain = lxt_relevance(tv, x, 3)
    assert (ours - plain).abs().max() > 0.1 * plain.abs().max()
