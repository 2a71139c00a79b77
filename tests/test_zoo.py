"""The backbone zoo of the controlled-evidence benchmark (issue 16): every member is a model the adapters open
exactly (forward, CAAP against the naive hook loop), trains with the demo recipe, and loads by name."""

from __future__ import annotations

import pytest
import torch

from caap import CAAP
from caap.adapters import adapt, create_model
from caap.adapters.backbones import BACKBONES, build_backbone
from caap.data.train import train
from caap.errors import CaapError
from caap.methods.caap import naive_caap


@pytest.mark.parametrize("arch", BACKBONES)
def test_every_backbone_is_opened_exactly(arch):
    torch.manual_seed(0)
    model = build_backbone(arch).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    adapter = adapt(model)
    assert adapter.grid((64, 64)) == (8, 8)
    with torch.no_grad():
        torch.testing.assert_close(adapter.forward(x), model(x), rtol=0, atol=0)
    att = CAAP(model, layers=[2, 3], batch_size=16).explain(x)
    expected = torch.stack([naive_caap(model, list(model.blocks), x[b : b + 1], torch.zeros_like(x[b : b + 1]),
                                       [2, 3], int(att.target[b]), adapter.num_prefix) for b in range(2)])
    torch.testing.assert_close(att.scores.flatten(1), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["deit3", "eva"])
def test_the_recipe_trains_and_the_weights_load_by_name(arch, tmp_path):
    from safetensors.torch import save_file

    model, record = train("simple", minutes=1.0, batch_size=8, max_steps=2, arch=arch, log_every=1)
    assert record["steps"] == 2 and not model.training
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = create_model(f"caap-zoo-{arch}", path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(CaapError, match="weights is needed"):
        create_model(f"caap-zoo-{arch}")
    with pytest.raises(CaapError, match="unknown zoo backbone"):
        build_backbone("resnet")
