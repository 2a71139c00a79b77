"""Model-agnostic methods on any image classifier (issue 15): a timm ResNet and ConvNeXt and a Hugging Face
ResNet get saliency, input × gradient, IG, SmoothGrad, occlusion on a chosen grid, input insertion, RISE and
extremal perturbations; the ViT-only methods raise one line naming the missing capability."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST

from caap import methods
from caap.adapters import ClassifierAdapter, adapt
from caap.errors import UnsupportedModelError

AGNOSTIC = sorted(n for n in methods.available() if methods.get(n).model_agnostic)


def classifier(name: str):
    torch.manual_seed(0)
    if name == "hf_resnet":
        import transformers as tf

        cfg = tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5)
        return tf.ResNetForImageClassification(cfg).eval()
    import timm

    return timm.create_model(name, pretrained=False, num_classes=5).eval()


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def test_the_model_agnostic_set():
    assert {"saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion", "rise",
            "input_insertion", "extremal_perturbation"} <= set(AGNOSTIC)
    assert not {"caap", "gae", "rollout", "gradcam", "attnlrp", "token_occlusion"} & set(AGNOSTIC)


@pytest.mark.parametrize("arch", ["resnet10t", "convnext_atto", "hf_resnet"])
def test_every_model_agnostic_method_runs_on_a_cnn(arch):
    model = classifier(arch)
    adapter = ClassifierAdapter(model, cell=8)
    x = images()
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(adapter.forward(x), getattr(logits, "logits", logits))
    for name in AGNOSTIC:
        options = dict(FAST.get(name, {}))
        if name == "mda":
            options["order"] = "saliency"
        att = methods.get(name)(adapter, **options).explain(x, target=[1, 3])
        size = (4, 4) if att.meta["resolution"] == "patch" else (32, 32)
        assert att.scores.shape == (2, *size) and torch.isfinite(att.scores).all(), name


def test_saliency_and_occlusion_on_a_resnet_equal_captum():
    captum = pytest.importorskip("captum.attr")
    model = classifier("resnet10t")
    x = images()
    ours = methods.get("saliency")(model).explain(x, target=[1, 3]).scores
    theirs = captum.Saliency(model).attribute(x.clone().requires_grad_(True), target=[1, 3], abs=True).amax(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    ours = methods.get("occlusion")(ClassifierAdapter(model, cell=8)).explain(x, target=[1, 3]).scores  # 4 x 4 grid
    theirs = captum.Occlusion(model).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), target=[1, 3],
                                               baselines=0.0)
    torch.testing.assert_close(ours, theirs[:, 0, ::8, ::8], rtol=1e-4, atol=1e-5)


def test_a_classifier_takes_its_own_normalization():
    model = classifier("convnext_atto")
    assert adapt(model).normalization.mean == pytest.approx(tuple(model.pretrained_cfg["mean"]))


@pytest.mark.parametrize("name", ["caap", "caap_fast", "gae", "gradcam", "attnlrp", "token_occlusion", "lrp"])
def test_vit_only_methods_name_what_a_cnn_lacks(name):
    with pytest.raises(UnsupportedModelError, match="no tokens: method .* needs a ViT") as err:
        methods.get(name)(classifier("resnet10t"))
    assert "\n" not in str(err.value) and "saliency" in str(err.value)


def test_the_cli_explains_a_cnn_with_a_model_agnostic_method(tmp_path, capsys):
    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    from caap.cli import main

    weights = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in classifier("resnet10t").state_dict().items()}, str(weights))
    picture = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(picture)
    common = ["--model", "resnet10t", "--weights", str(weights)]
    code = main(["explain", str(picture), *common, "--method", "saliency", "--out", str(tmp_path / "a")])
    assert code == 0, capsys.readouterr().err
    code = main(["compare", str(picture), *common, "--methods", "saliency,occlusion,rise:masks=8",
                 "--out", str(tmp_path / "b")])
    assert code == 0, capsys.readouterr().err
    code = main(["explain", str(picture), *common, "--out", str(tmp_path / "c")])  # CAAP, the default
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "needs a ViT" in err
