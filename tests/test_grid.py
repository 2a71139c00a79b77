"""The grid pointing game (issue 16): grids and masks exact, only right and confident cells, four classes per
grid, deterministic for a seed; ``grid:DIR`` in ``caap bench`` with every mask metric."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from caap.cli import main
from caap.data.datasets import ImageFolder
from caap.data.grid import GridPointing, cell_mask, downscale
from caap.errors import CaapError

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]  # ImageNet classes 0..4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three images per class; the red channel encodes the class, so a fake model can classify them."""
    root = tmp_path_factory.mktemp("grid")
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(WNIDS):
        for k in range(3):
            pixels = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
            pixels[..., 0] = 40 * c + 20 + k  # class c, and one image per class (k = 2) made ambiguous below
            Image.fromarray(pixels).save(root / f"{wnid}_{k}.png")
    return root


def transform(picture):
    return torch.from_numpy(np.array(picture.resize((32, 32)))).permute(2, 0, 1).float() / 255.0


def classify(images: torch.Tensor) -> torch.Tensor:
    """The class from the mean red value (classes 0..4 of 1000); images with red ending in 2 are unsure."""
    red = images[:, 0].mean((1, 2)) * 255
    cls = ((red - 20) / 40).round().clamp(0, 4).long()
    probs = torch.full((images.shape[0], 1000), 1e-4)
    sure = (red - 20 - 40 * cls).abs() < 1.5
    probs[torch.arange(len(cls)), cls] = torch.where(sure, 0.9, 0.3)
    return probs


def test_grids_and_masks_are_exact(folder):
    images = ImageFolder(folder, transform)
    data = GridPointing(images, classify, threshold=0.5, seed=1)
    assert data.describe()["eligible"] == 10  # the k = 2 images are unsure: 2 per class kept
    assert len(data.grids) == 2 and len(data) == 8
    for g, members in enumerate(data.grids):
        assert len({data.labels[j] for j in members}) == 4  # four different classes
        for cell in range(4):
            item = data[4 * g + cell]
            assert item.label == data.labels[members[cell]] and item.image.shape == (3, 32, 32)
            r, c = divmod(cell, 2)
            expected = F.interpolate(images[members[cell]].image[None], size=(16, 16), mode="bilinear",
                                     align_corners=False, antialias=True)[0]
            torch.testing.assert_close(item.image[:, 16 * r:16 * (r + 1), 16 * c:16 * (c + 1)], expected)
            assert item.mask.sum() == 256 and item.mask[16 * r:16 * (r + 1), 16 * c:16 * (c + 1)].all()
    again = GridPointing(images, classify, threshold=0.5, seed=1)
    other = GridPointing(images, classify, threshold=0.5, seed=2)
    assert again.grids == data.grids and other.grids != data.grids
    assert GridPointing(images, classify, threshold=0.2, seed=1).describe()["eligible"] == 15
    assert cell_mask((4, 6), 3).tolist() == [[False] * 6] * 2 + [[False] * 3 + [True] * 3] * 2
    with pytest.raises(CaapError, match="even input size"):
        downscale(torch.zeros(3, 5, 6))
    with pytest.raises(CaapError, match="threshold"):
        GridPointing(images, classify, threshold=1.5)


def test_caap_bench_runs_the_grid_pointing_game(folder, tmp_path, capsys, monkeypatch):
    import timm
    from safetensors.torch import save_file

    # a random ViT classifies none of these images right: keep every cell (the filter is tested above)
    monkeypatch.setattr(GridPointing, "_confident", lambda self, classify, labels, batch: list(range(len(labels))))
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_vit").state_dict().items()}, str(weights))
    out = tmp_path / "run"
    code = main(["bench", "--model", "test_vit", "--weights", str(weights), "--data", f"grid:{folder}:seed=3",
                 "--methods", "gae,saliency", "--metrics",
                 "pointing_game,relevance_mass,relevance_mass:resolution=patch,energy_pointing_game",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    table = json.loads((out / "table.json").read_text())
    assert table["images"] == 12  # 15 images of 5 classes: 3 grids of four classes
    assert 0 <= table["rows"]["gae"]["relevance_mass"]["mean"] <= 1
    assert main(["bench", "--model", "test_vit", "--weights", str(weights), "--data", f"grid:{folder}:bogus=1",
                 "--methods", "gae", "--metrics", "pointing_game", "--out", str(tmp_path / "x")]) == 2
