"""The vision towers users bring (issue 27): open_clip's ViT towers (B/32, B/16 layouts) and timm-backed SigLIP
tower, Hugging Face CLIP and SigLIP towers, and zero-shot classifiers from text prompts — forward equal to the
tower's own output, exact CAAP equal to the naive hook loop, attention and gradient methods running, and the
zero-shot logits equal to open_clip's and transformers' own. All random-init, no weights needed."""

from __future__ import annotations

import pytest
import torch
from clip_models import IMG, open_clip_folder, open_clip_model
from modelstate import assert_untouched, snapshot

from caap import CAAP, methods
from caap.adapters import ZeroShot, adapt
from caap.methods.caap import naive_caap

open_clip = pytest.importorskip("open_clip")
tf = pytest.importorskip("transformers")


def open_clip_vit(patch: int, pool: str = "tok", attentional: bool = False) -> torch.nn.Module:
    """open_clip's ViT tower of the B/32 or B/16 layout (class embedding, ln_pre, ln_post, projection), tiny."""
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    torch.manual_seed(patch)
    cfg = CLIPVisionCfg(layers=3, width=32, head_width=16, patch_size=patch, image_size=IMG, pool_type=pool,
                        attentional_pool=attentional, attn_pooler_heads=2)
    return _build_vision_tower(16, cfg).eval()


def open_clip_siglip_tower() -> torch.nn.Module:
    """open_clip's timm-backed tower (``TimmModel``) in SigLIP's layout — a timm ViT trunk without a class token,
    attention pooling (``map``) and no projection — with the trunk at test size (open_clip builds timm models at
    their registered size)."""
    from open_clip.timm_model import TimmModel
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(2)
    tower = TimmModel("vit_tiny_patch16_224", embed_dim=32, pool="", proj="none")
    tower.trunk = VisionTransformer(img_size=IMG, patch_size=8, embed_dim=32, depth=2, num_heads=2, class_token=False,
                                    global_pool="map", num_classes=0)
    return tower.eval()


def hf_clip(siglip: bool = False) -> torch.nn.Module:
    torch.manual_seed(4)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if siglip:
        cfg = tf.SiglipConfig(text_config=dict(vocab_size=50, max_position_embeddings=8, **common),
                              vision_config=dict(image_size=IMG, patch_size=8, **common))
        return tf.SiglipModel(cfg).eval()
    cfg = tf.CLIPConfig(text_config=dict(vocab_size=50, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                                         **common),
                        vision_config=dict(image_size=IMG, patch_size=8, **common), projection_dim=16)
    return tf.CLIPModel(cfg).eval()


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(5))


TOWERS = {
    "open_clip_b32": lambda: open_clip_vit(16),  # one patch size per layout at this input size
    "open_clip_b16": lambda: open_clip_vit(8),
    "open_clip_avg": lambda: open_clip_vit(8, pool="avg"),
    "open_clip_attn_pool": lambda: open_clip_vit(8, attentional=True),
    "open_clip_siglip": open_clip_siglip_tower,
    "hf_clip_vision": lambda: tf.CLIPVisionModelWithProjection(hf_clip().config.vision_config).eval(),
    "hf_clip": lambda: hf_clip(),
    "hf_siglip": lambda: hf_clip(siglip=True),
}


def own_output(name: str, model, x):
    with torch.no_grad():
        if name.startswith("hf_clip_vision"):
            return model(pixel_values=x).image_embeds
        if name.startswith("hf_"):
            out = model.get_image_features(pixel_values=x)
            return out.pooler_output if hasattr(out, "pooler_output") else out
        return model(x)


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_the_adapter_reproduces_the_towers_own_output(name):
    model = TOWERS[name]()
    x = images()
    with torch.no_grad():
        got = adapt(model).forward(x)
    torch.testing.assert_close(got, own_output(name, model, x), rtol=1e-5, atol=1e-5)


def blocks_of(model):
    adapter = adapt(model)
    return list(adapter.blocks)


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_exact_caap_equals_the_naive_loop_on_every_tower(name):
    model = TOWERS[name]()
    adapter = adapt(model)
    x = images()
    target = [1, 3]
    att = CAAP(model, layers=[1]).explain(x, target=target)
    for b in range(2):
        expected = naive_caap(adapter.forward, blocks_of(model), x[b : b + 1], torch.zeros_like(x[b : b + 1]), [1],
                              target[b], adapter.num_prefix)
        torch.testing.assert_close(att.scores[b].flatten(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TOWERS))
@pytest.mark.parametrize("method", ["rollout", "gae", "saliency", "integrated_gradients:steps=4", "caap_fast"])
def test_attention_and_gradient_methods_run_and_leave_the_tower_as_found(name, method):
    model = TOWERS[name]()
    before = snapshot(model)
    att = methods.build(method, model).explain(images(), target=[0, 2])
    assert torch.isfinite(att.scores).all()
    assert_untouched(model, before)


def test_open_clip_zero_shot_logits_equal_open_clips_own():
    model = open_clip_model()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    prompts = ["a photo of a dog", "a photo of a cat", "a diagram"]
    zs = ZeroShot.from_open_clip(model, prompts, tokenizer)
    x = images()
    with torch.no_grad():
        image_features, text_features, scale = model(x, tokenizer(prompts))[:3]
        expected = scale * image_features @ text_features.T
        torch.testing.assert_close(zs(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(adapt(zs).forward(x), expected, rtol=1e-5, atol=1e-5)
    assert adapt(zs).card.class_names == tuple(prompts) and zs.kind == "softmax"
    att = CAAP(zs).explain(x, target=1)
    assert att.scores.shape == (2, 4, 4) and torch.isfinite(att.scores).all()


def test_open_clip_siglip_logits_carry_the_bias():
    model = open_clip_model(bias=True)
    tokens = torch.randint(2, 50, (3, 77), generator=torch.Generator().manual_seed(6))
    zs = ZeroShot.from_open_clip(model, ["a", "b", "c"], tokens=tokens)
    x = images()
    with torch.no_grad():
        out = model(x, tokens)
        expected = out[2] * out[0] @ out[1].T + out[3]
        torch.testing.assert_close(zs(x), expected, rtol=1e-5, atol=1e-5)
    assert zs.kind == "sigmoid"


@pytest.mark.parametrize("siglip", [False, True])
def test_transformers_zero_shot_logits_equal_their_own(siglip):
    model = hf_clip(siglip)
    ids = torch.randint(2, 50, (3, 8), generator=torch.Generator().manual_seed(7))
    zs = ZeroShot.from_transformers(model, input_ids=ids, names=["dog", "cat", "car"])
    x = images()
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values=x).logits_per_image
        torch.testing.assert_close(zs(x), expected, rtol=1e-5, atol=1e-5)
    att = methods.build("caap_fast", zs).explain(x, target=2)
    exact = CAAP(zs).explain(x, target=2)
    assert torch.corrcoef(torch.stack([att.scores.flatten(), exact.scores.flatten()]))[0, 1] > 0.5


def test_one_command_explains_an_image_for_a_prompt(tmp_path, capsys):
    import json

    from PIL import Image

    from caap.cli import main

    folder = open_clip_folder(tmp_path)
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "a.png")
    assert main(["explain", str(tmp_path / "a.png"), "--model", f"open_clip:local-dir:{folder}", "--prompts",
                 "a photo of a dog,a photo of a cat", "--target", "a photo of a cat", "--out",
                 str(tmp_path / "out")]) == 0
    assert "class 1 (a photo of a cat)" in capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["images"][0]["targets"] == [1] and results["images"][0]["class_names"] == ["a photo of a cat"]
    (tmp_path / "dogs").mkdir()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(tmp_path / "dogs" / "x.png")
    assert main(["bench", "--model", f"open_clip:local-dir:{folder}", "--prompts", "dog;cat".replace(";", ","),
                 "--templates", "a photo of a {}.;a {}.", "--data", str(tmp_path / "dogs"), "--target", "pred",
                 "--methods", "caap,gae", "--metrics", "deletion:step=4", "--out", str(tmp_path / "run")]) == 0
    assert main(["explain", str(tmp_path / "a.png"), "--model", "caap-demo", "--prompts", "a,b", "--out",
                 str(tmp_path / "o")]) == 2
    assert "--prompts apply to an image-text model" in capsys.readouterr().err
