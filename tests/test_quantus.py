"""Quantus interop (issue 15): caap methods as Quantus's ``explain_func``, Quantus metrics as caap metrics
(``quantus:NAME`` in ``caap bench``), and metrics that take Captum's / Quantus's map layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from archs import IMG, build

from caap import methods, metrics
from caap.cli import main
from caap.errors import CaapError

quantus = pytest.importorskip("quantus")


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(8))


def test_explain_func_is_what_quantus_calls():
    import caap.quantus

    model = build("timm_vit")
    x, y = images(), np.array([1, 4, 7])
    expected = methods.get("gae")(model).explain(x, target=[1, 4, 7]).to_pixels().numpy()
    for inputs in (x.numpy(), x):
        got = caap.quantus.explain_func("gae")(model=model, inputs=inputs, targets=y, device="cpu")
        assert got.shape == (3, 1, IMG, IMG) and got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    nearest = caap.quantus.explain_func("caap:layers=1:3", upsample="nearest")(model, x.numpy(), y)
    patch = methods.get("caap")(model, layers="1:3").explain(x, target=[1, 4, 7]).scores
    np.testing.assert_array_equal(nearest[:, 0, ::8, ::8], patch.numpy())
    with pytest.raises(CaapError, match="unknown method 'nope'"):
        caap.quantus.explain_func("nope")


def test_quantus_evaluate_runs_caap_methods():
    import caap.quantus

    model = build("timm_vit")
    x, y = images().numpy(), np.array([1, 4, 7])
    result = quantus.evaluate(metrics={"sparseness": quantus.Sparseness(disable_warnings=True)},
                              xai_methods={"caap": caap.quantus.explain_func(), "gae": caap.quantus.explain_func()},
                              model=model, x_batch=x, y_batch=y, explain_func_kwargs={}, agg_func=np.asarray)
    direct = quantus.Sparseness(disable_warnings=True)(model=model, x_batch=x, y_batch=y,
                                                       a_batch=caap.quantus.explain_func("gae")(model, x, y))
    np.testing.assert_allclose(result["gae"]["sparseness"], direct, rtol=1e-6)
    assert len(result["caap"]["sparseness"]) == 3


def test_a_quantus_metric_is_a_caap_metric():
    model = build("timm_vit")
    x, t = images(), torch.tensor([1, 4, 7])
    maps = methods.get("gae")(model).explain(x, target=t).scores  # [B, 4, 4] patch maps
    metric = metrics.build("quantus:Sparseness")
    ours = metric(model, x, t, maps)
    a = torch.nn.functional.interpolate(maps[:, None], size=(IMG, IMG), mode="nearest").numpy()
    theirs = quantus.Sparseness(disable_warnings=True)(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5)
    assert metrics.get("quantus:Sparseness").higher_is_better
    assert metrics.get("quantus:RelevanceMassAccuracy").needs_masks
    curve = metrics.build("quantus:PixelFlipping:features_in_step=64")(model, x, t, maps)
    assert curve.shape == (3,) and torch.isfinite(curve).all()
    for bad, message in [("quantus", "needs the Quantus metric's name"), ("quantus:Nope", "unknown Quantus metric"),
                         ("quantus:Sparseness:bogus=1", "bogus")]:
        with pytest.raises(CaapError, match=message):
            metrics.build(bad)


def test_metrics_take_captum_and_quantus_layouts():
    """The same maps as ``[B, h, w]``, ``[B, 1, H, W]`` (repeated) and ``[B, 3, H, W]`` (channels summed)."""
    model = build("timm_vit")
    x, t = images(), torch.tensor([1, 4, 7])
    maps = methods.get("gae")(model).explain(x, target=t).scores
    pixels = torch.nn.functional.interpolate(maps[:, None], size=(IMG, IMG), mode="nearest")  # [B, 1, H, W]
    for name in ("sparseness", "deletion:step=4"):
        metric = metrics.build(name)
        base = metric(model, x, t, maps)
        torch.testing.assert_close(metric(model, x, t, pixels), base)
        torch.testing.assert_close(metric(model, x, t, (pixels / 3).expand(-1, 3, -1, -1).numpy()), base)
    with pytest.raises(CaapError, match=r"\[B, 1, H, W\] or \[B, 3, H, W\]"):
        metrics.build("sparseness")(model, x, t, torch.zeros(3, 2, IMG, IMG))


def test_caap_bench_runs_quantus_metrics(tmp_path, capsys):
    assert main(["bench", "--model", "caap-demo", "--data", "synthetic", "--limit", "2", "--methods", "caap,rollout",
                 "--metrics", "quantus:Sparseness,sparseness,quantus:RelevanceMassAccuracy", "--out",
                 str(tmp_path)]) == 0
    table = json.loads((tmp_path / "table.json").read_text())
    row = table["rows"]["caap"]
    assert {"quantus:Sparseness", "sparseness", "quantus:RelevanceMassAccuracy"} <= set(row)
    assert "quantus:Sparseness ↑" in capsys.readouterr().out
