from __future__ import annotations

import pytest
import torch
from archs import ARCHS, GRID, IMG, PREFIX, build, explainable, logits_fn

from caap.adapters import GenericAdapter, HFViTAdapter, TimmViTAdapter, adapt
from caap.errors import CaapError, UnsupportedModelError


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_adapter_forward_reproduces_model_exactly(name):
    model = build(name)
    adapter = adapt(explainable(name, model))
    x = torch.randn(3, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = logits_fn(name, model)(x)
        got = adapter.forward(x)
    assert torch.equal(got, expected)
    assert adapter.num_prefix == PREFIX[name]
    assert adapter.grid((IMG, IMG)) == GRID
    assert adapter.embed(x).shape[1] == PREFIX[name] + GRID[0] * GRID[1]


@pytest.mark.parametrize(
    ("name", "kind"),
    [("timm_vit", TimmViTAdapter), ("timm_deit_distilled", TimmViTAdapter), ("hf_deit_teacher", HFViTAdapter),
     ("generic_torch", GenericAdapter)],
)
def test_adapter_is_chosen_automatically(name, kind):
    assert isinstance(adapt(explainable(name, build(name))), kind)


def test_head_rows_read_from_the_model():
    assert adapt(build("timm_vit")).head_rows == (0,)
    assert adapt(build("timm_deit_distilled")).head_rows == (0, 1)
    assert adapt(build("timm_avg_fc_norm")).head_rows is None
    assert adapt(build("timm_map_pool")).head_rows is None
    assert adapt(build("hf_dinov2")).head_rows is None


def test_unsupported_model_says_what_is_missing():
    from caap import methods

    other = adapt(torch.nn.Sequential(torch.nn.Linear(2, 2)))  # any classifier: the model-agnostic methods only
    assert type(other).__name__ == "ClassifierAdapter"
    with pytest.raises(UnsupportedModelError, match="Sequential has no tokens.*needs a ViT.*GenericAdapter"):
        methods.get("caap")(other)
    with pytest.raises(UnsupportedModelError, match="expected a torch nn.Module"):
        adapt("deit_tiny")


def test_wrong_input_size_is_rejected():
    adapter = adapt(build("timm_vit"))
    with pytest.raises(CaapError, match=r"input size \(48, 48\).*img_size \(32, 32\)"):
        adapter.check_input(torch.zeros(1, 3, 48, 48))
    with pytest.raises(CaapError, match=r"\[B, 3, H, W\].*\(3, 32, 32\)"):
        adapter.check_input(torch.zeros(3, 32, 32))


def test_timm_dynamic_img_size_grid():
    model = build("timm_vit")
    dyn = __import__("archs").timm_vit(dynamic_img_size=True)
    assert adapt(dyn).grid((48, 32)) == (6, 4)
    assert adapt(model).grid((32, 32)) == GRID


def test_normalization_from_the_model():
    import timm

    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=5)
    assert adapt(deit).normalization.mean == pytest.approx((0.485, 0.456, 0.406))
    vit = timm.create_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=False, num_classes=5)
    assert adapt(vit).normalization.mean == (0.5, 0.5, 0.5)  # timm's pretrained_cfg
    # a Hugging Face model without an image-processor config: ImageNet's, never a guess from the class name
    # (tests/test_hub.py reads the config from a folder and from the hub cache)
    assert adapt(build("hf_vit")).normalization.mean == pytest.approx((0.485, 0.456, 0.406))


def test_hf_from_pretrained_with_local_files(tmp_path):
    """The Hugging Face loading path (``from_pretrained``) on a local folder."""
    import transformers as tf

    from caap import CAAP

    model = build("hf_deit_teacher")
    model.save_pretrained(tmp_path)
    loaded = tf.DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    a = CAAP(model, layers=[1]).explain(x)
    b = CAAP(loaded, layers=[1]).explain(x)
    torch.testing.assert_close(a.scores, b.scores)


def test_timm_pretrained_path_with_a_local_file(tmp_path):
    """timm's own pretrained loader (``pretrained=True``) fed a local file, and caap's loader agree."""
    import timm
    from safetensors.torch import save_file

    from caap.adapters import create_model

    torch.manual_seed(0)
    src = timm.create_model("test_vit", pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(path))
    via_timm = timm.create_model("test_vit", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    via_caap = create_model("test_vit", path)
    for k, v in via_timm.state_dict().items():
        assert torch.equal(v, via_caap.state_dict()[k])


def _block_input(dim: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(3, PREFIX["timm_vit"] + GRID[0] * GRID[1], dim, generator=torch.Generator().manual_seed(1),
                       dtype=dtype)


@pytest.mark.parametrize("kwargs", [{}, {"qkv_bias": False}, {"act_layer": "gelu_tanh"}, {"mlp_ratio": 3.0},
                                    {"dtype": torch.float64}], ids=["plain", "no_qkv_bias", "gelu_tanh", "mlp3", "f64"])
def test_inplace_block_path_reproduces_the_block(kwargs):
    from archs import _scale, timm_vit

    from caap.core.workspace import Workspace

    dtype = kwargs.pop("dtype", torch.float32)
    model = _scale(timm_vit(**kwargs), seed=0).to(dtype)
    adapter, ws = TimmViTAdapter(model), Workspace()
    for index, block in enumerate(model.blocks):
        x = _block_input(model.embed_dim, dtype)
        with torch.inference_mode():
            expected = block(x)
            z = x.clone()
            out = adapter.run_block_inplace(index, z, ws)
        assert out is z  # the residual stream was updated in place
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_inplace_block_path_under_autocast_follows_autocast():
    """bf16 autocast: products, attention and GELU in bf16, norms and the residual stream in float32."""
    from archs import _scale, timm_vit

    from caap.core.workspace import Workspace

    model = _scale(timm_vit(), seed=0)
    adapter, ws = TimmViTAdapter(model), Workspace()
    x = _block_input(model.embed_dim)
    for index, block in enumerate(model.blocks):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            expected = block(x)
            out = adapter.run_block_inplace(index, x.clone(), ws)
        full = block(x).detach()
        assert out.dtype == expected.dtype == torch.float32
        # the same ops and roundings as autocast (bit-identical here); allowed: 1 % of bf16's own error
        assert (out - expected).abs().max() <= 0.01 * (expected - full).abs().max()


def test_inplace_block_path_declines_what_it_does_not_reproduce():
    from archs import _scale, timm_vit

    from caap.core.workspace import Workspace

    ws = Workspace()
    x = _block_input(32)
    plain = TimmViTAdapter(_scale(timm_vit(), seed=0))
    with torch.inference_mode():
        assert plain.run_block_inplace(0, x.clone(), ws) is not None
        assert plain.run_block_inplace(0, x.clone().transpose(0, 1).contiguous().transpose(0, 1), ws) is None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert plain.run_block_inplace(0, x.clone().double(), ws) is None  # autocast leaves float64 alone
    assert plain.run_block_inplace(0, x.clone(), ws) is None  # autograd on: the module's own path
    for kwargs in ({"init_values": 0.5}, {"qk_norm": True}, {"act_layer": "relu"}):
        adapter = TimmViTAdapter(_scale(timm_vit(**kwargs), seed=0))
        with torch.inference_mode():
            assert adapter.run_block_inplace(0, x.clone(), ws) is None, kwargs
    handle = plain.model.blocks[0].mlp.fc1.register_forward_hook(lambda *args: None)
    try:
        with torch.inference_mode():
            assert plain.run_block_inplace(0, x.clone(), ws) is None  # a user's hook must still fire
    finally:
        handle.remove()
    attn = plain.model.blocks[0].attn
    attn.forward = attn.forward  # an instance-level forward, as instrumentation libraries install
    with torch.inference_mode():
        assert plain.run_block_inplace(0, x.clone(), ws) is None
    del attn.forward
    plain.model.blocks[0].mlp.drop1.train()  # one dropout in training mode is enough to decline
    with torch.inference_mode():
        assert plain.run_block_inplace(0, x.clone(), ws) is None
    plain.model.blocks[0].train()
    with torch.inference_mode():
        assert plain.run_block_inplace(0, x.clone(), ws) is None
