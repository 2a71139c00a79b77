"""timm's other vision transformers (issue 27): BEiT, the relative-position ViTs, CaiT and XCiT, each with its
forward equal to the model's and exact CAAP equal to the naive hook loop; the attention and gradient methods where
the architecture has token attention; one-line refusals where patches merge (Swin, PiT, MViTv2, LeViT, Hiera)."""

from __future__ import annotations

import pytest
import timm
import torch
from modelstate import assert_untouched, snapshot

from caap import CAAP, methods
from caap.adapters import adapt
from caap.errors import CaapError, UnsupportedModelError
from caap.methods.caap import naive_caap

IMG = 32
SMALL = {"img_size": IMG, "patch_size": 8, "embed_dim": 32, "num_heads": 2, "num_classes": 10}
FAMILIES = {
    "beit": ("beit_base_patch16_224", {**SMALL, "depth": 3, "use_rel_pos_bias": True, "init_values": 0.1}),
    "beit_shared_bias": ("beit_base_patch16_224", {**SMALL, "depth": 3, "use_rel_pos_bias": False,
                                                   "use_shared_rel_pos_bias": True, "use_abs_pos_emb": True}),
    "beitv2": ("beitv2_base_patch16_224", {**SMALL, "depth": 3}),
    "vit_relpos": ("vit_relpos_base_patch16_224", {**SMALL, "depth": 3}),
    "vit_srelpos": ("vit_srelpos_small_patch16_224", {**SMALL, "depth": 3}),
    "cait": ("cait_xxs24_224", {**SMALL, "depth": 3, "depth_token_only": 1}),
    "naflexvit": ("naflexvit_base_patch16_gap", {"embed_dim": 32, "num_heads": 2, "depth": 3, "num_classes": 10}),
    "naflexvit_rope": ("naflexvit_base_patch16_gap", {"embed_dim": 32, "num_heads": 2, "depth": 3,
                                                      "num_classes": 10, "rope_type": "axial"}),
    "naflexvit_rope_mixed": ("naflexvit_base_patch16_gap", {"embed_dim": 32, "num_heads": 2, "depth": 3,
                                                            "num_classes": 10, "rope_type": "mixed"}),
    "xcit": ("xcit_nano_12_p16_224", {"img_size": IMG, "patch_size": 16, "embed_dim": 32, "num_heads": 2,
                                      "depth": 2, "cls_attn_layers": 1, "num_classes": 10}),
}


def build(name: str):
    arch, kwargs = FAMILIES[name]
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # visible relative-position biases and layer scales (they start at zero or tiny)
        for n, p in model.named_parameters():
            if "relative_position" in n or "gamma" in n or n.endswith("rel_pos.bias_table"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    return model


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_adapter_is_the_model_and_exact_caap_the_naive_loop(name):
    model = build(name)
    adapter = adapt(model)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(adapter.forward(x), model(x), rtol=1e-5, atol=1e-5)
    att = CAAP(model, layers=[1]).explain(x, target=[2, 5])
    for b in range(2):
        expected = naive_caap(model, list(model.blocks), x[b : b + 1], torch.zeros_like(x[b : b + 1]), [1],
                              [2, 5][b], adapter.num_prefix)
        torch.testing.assert_close(att.scores[b].flatten(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("method", ["rollout", "gae", "saliency", "occlusion"])
def test_methods_run_or_name_what_is_missing(name, method):
    model = build(name)
    before = snapshot(model)
    if name == "xcit" and method in ("rollout", "gae"):
        with pytest.raises(UnsupportedModelError, match="cross-covariance attention mixes channels"):
            methods.build(method, model).explain(images(1))
    else:
        assert torch.isfinite(methods.build(method, model).explain(images(1)).scores).all()
    assert_untouched(model, before)


@pytest.mark.parametrize(("arch", "family"), [("swin_tiny_patch4_window7_224", "Swin"), ("pit_ti_224", "PiT"),
                                              ("mvitv2_tiny", "MViTv2"), ("levit_128s", "LeViT"),
                                              ("hiera_tiny_224", "Hiera")])
def test_patch_merging_transformers_are_refused_in_one_line(arch, family):
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    with pytest.raises(UnsupportedModelError, match=f"{family} merges patches between its stages") as info:
        methods.get("caap")(model)
    assert "\n" not in str(info.value)


def test_naflexvit_takes_any_size_and_aspect_ratio():
    """A NaFlexViT embeds any grid (positions resampled, rotary embeddings following it): a 32 x 64 image is a 2 x 4
    grid, and exact CAAP is still the naive loop."""
    model = build("naflexvit_rope")
    x = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(4))
    adapter = adapt(model)
    with torch.no_grad():
        torch.testing.assert_close(adapter.forward(x), model(x), rtol=1e-5, atol=1e-5)
    att = CAAP(model, layers=[1]).explain(x, target=3)
    assert att.scores.shape == (1, 2, 4)
    expected = naive_caap(model, list(model.blocks), x, torch.zeros_like(x), [1], 3, adapter.num_prefix)
    torch.testing.assert_close(att.scores[0].flatten(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(UnsupportedModelError, match="token_subsets"):
        methods.build("token_occlusion", model)


@pytest.mark.parametrize("name", ["naflexvit_rope", "naflexvit_rope_mixed"])
def test_a_block_rotates_by_the_grid_its_caller_passes_not_by_the_last_embedding(name):
    """Rotary models: 32 x 64 and 64 x 32 images both have 8 patches, on a 2 x 4 and a 4 x 2 grid. Whatever was
    embedded last, each batch's blocks rotate by its own grid (``run_block``'s ``grid``); nothing is kept from
    ``embed`` (an adapter keyed by token count gave the first batch the second one's rotation)."""
    model = build(name)
    adapter = adapt(model)
    wide = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(4))
    tall = torch.randn(1, 3, 64, 32, generator=torch.Generator().manual_seed(5))
    before = dict(vars(adapter))
    with torch.no_grad():
        zw, zt = adapter.embed(wide), adapter.embed(tall)  # both [1, 8, D]
        assert vars(adapter).keys() == before.keys()
        for index in range(adapter.num_blocks):
            zw, zt = adapter.run_block(index, zw, (2, 4)), adapter.run_block(index, zt, (4, 2))
        torch.testing.assert_close(adapter.head(zw), model(wide), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(adapter.head(zt), model(tall), rtol=1e-5, atol=1e-5)
        with pytest.raises(CaapError, match=r"grid \(3, 3\) has 9 patches, the stream 8"):
            adapter.run_block(0, zw, (3, 3))
    assert not torch.allclose(CAAP(model, layers=[1]).explain(wide, target=3).scores.flatten(),
                              CAAP(model, layers=[1]).explain(tall, target=3).scores.flatten())
