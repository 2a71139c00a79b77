"""Figures fit for a paper (issue 15): rendered in the tests and checked by their properties — colour bars,
opacity zero where the map is zero, percentile clipping, the colour map by the method's sign, one shared scale
for the top-k classes, SVG/PDF output, and an Attribution that plots itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from caap import Attribution
from caap.viz import explanation_figure, grid_figure


def colour_bars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def overlays(fig: Figure) -> list[np.ndarray]:
    """The RGBA overlay of every panel that has one (the second image of the axes)."""
    return [np.asarray(ax.get_images()[1].get_array()) for ax in fig.axes if len(ax.get_images()) == 2]


IMAGE = np.full((32, 32, 3), 0.5)


def patch_map(seed: int, signed: bool = True) -> torch.Tensor:
    m = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed))
    m[0, :] = 0.0  # a row of patches that says nothing
    return m if signed else m.abs()


def test_opacity_follows_the_map_and_is_zero_where_it_is_zero():
    fig = explanation_figure(IMAGE, [patch_map(0)], ["tench"], mode="nearest")
    (rgba,) = overlays(fig)
    assert rgba.shape == (32, 32, 4)
    assert (rgba[:8, :, 3] == 0).all()  # the zero patches: the photo shows through
    assert rgba[8:, :, 3].max() == pytest.approx(0.85) and (rgba[8:, :, 3] > 0).all()
    assert len(colour_bars(fig)) == 1


def test_one_outlier_does_not_wash_out_the_map():
    m = torch.rand(32, 32, generator=torch.Generator().manual_seed(1)) + 0.5
    m[0, 0] = 1000.0  # one extreme pixel (IG and saliency have them)
    (rgba,) = overlays(explanation_figure(IMAGE, [m], ["x"], signed=False))
    assert np.median(rgba[..., 3]) > 0.3  # without clipping the median opacity would be ~0.001


def test_signed_and_unsigned_methods_get_their_colour_maps_and_bars():
    fig = grid_figure([IMAGE, IMAGE], [patch_map(3, signed=False), patch_map(2)], ["gae", "caap"],
                      signed=[False, True], columns=2)
    bars = colour_bars(fig)
    assert len(bars) == 2 and len(overlays(fig)) == 2
    names = [bar._colorbar.cmap.name for bar in bars]
    assert names == ["inferno", "RdBu_r"]
    lows = [bar._colorbar.norm.vmin for bar in bars]
    assert lows[0] == 0.0 and lows[1] < 0 and bars[1]._colorbar.norm.vmax == -lows[1]  # centred at 0


def test_top_k_share_one_scale_and_one_input_panel():
    maps = [patch_map(4), 3 * patch_map(5), 0.1 * patch_map(6)]
    fig = explanation_figure(IMAGE, maps, ["a long class name, with synonyms, that would be cut", "b", "c"])
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(images) == 4 and len(images[0].get_images()) == 1  # the input once, then three overlays
    assert len(colour_bars(fig)) == 1
    assert "\n" in images[1].get_title()  # wrapped, not cut
    weights = [rgba[..., 3].max() for rgba in overlays(fig)]
    assert weights[1] > weights[2]  # the same scale: the weak map stays faint


def test_an_attribution_plots_itself():
    att = Attribution(torch.stack([patch_map(7), patch_map(8)]), torch.tensor([1, 2]), (32, 32), "caap",
                      meta={"signed": True})
    fig = att.plot(1, IMAGE, mode="nearest")
    assert isinstance(fig, Figure) and len(colour_bars(fig)) == 1 and "class 2" in fig.axes[0].get_title()
    assert (overlays(fig)[0][:8, :, 3] == 0).all()
    assert att._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(att.plot(0), Figure)  # the map alone
    with pytest.raises(Exception, match="index 5 is out of range"):
        att.plot(5)


def test_figures_in_svg_and_pdf_without_runtimes_in_titles(tmp_path):
    import timm
    from PIL import Image
    from safetensors.torch import save_file

    from caap.cli import main

    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    picture = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 70, 3), dtype=np.uint8)).save(picture)
    common = ["--model", "test_vit", "--weights", str(weights)]
    assert main(["explain", str(picture), *common, "--layers", "2:4", "--format", "svg", "--display", "nearest",
                 "--out", str(tmp_path / "a")]) == 0
    record = json.loads((tmp_path / "a" / "results.json").read_text())["images"][0]
    assert record["figure"] == "p.caap.svg" and (tmp_path / "a" / "p.caap.svg").read_text().startswith("<?xml")
    assert main(["compare", str(picture), *common, "--methods", "rollout,saliency", "--format", "pdf",
                 "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "compare.pdf").read_bytes()[:5] == b"%PDF-"
    other = tmp_path / "q.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(other)
    assert main(["compare", str(picture), str(other), *common, "--methods", "rollout,saliency,gae",
                 "--out", str(tmp_path / "c")]) == 0  # images x methods: a row per image
    summary = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert [r["image"] for r in summary["images"]] == [str(picture), str(other)]
    assert all(set(r["seconds"]) == {"rollout", "saliency", "gae"} for r in summary["images"])
    width, height = Image.open(tmp_path / "c" / "compare.png").size
    assert width > height  # two rows of three maps


def test_an_unsigned_map_with_a_floor_is_clear_at_the_floor():
    """RISE-like scores (every value near 0.1, a bump on the object): the floor is transparent, not orange."""
    m = torch.full((32, 32), 0.1)
    m[10:20, 10:20] += 0.05
    (rgba,) = overlays(explanation_figure(IMAGE, [m], ["rise"], signed=False))
    assert rgba[0, 0, 3] == 0 and rgba[15, 15, 3] == pytest.approx(0.85)
