"""CAAP's room after the rebuild (issue 24): registry names are presets of strategy objects and take no mode,
impossible combinations are refused at construction naming both options, refiners take strategies, and the maps
of a chosen list of classes cost per class (fast mode: one backward pass each), equal to the all-class maps."""

from __future__ import annotations

import pytest
import torch
from archs import GRID, IMG, build

from caap import CAAP, AdaptiveCAAP, CoarseToFine, Exact, Fast, FastCAAP, FastThenExact, methods
from caap.errors import CaapError


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(21))


@pytest.mark.parametrize(("spec", "message"), [
    ("caap_fast:mode=exact", "takes no option 'mode'"),
    ("caap:mode=fast", "takes no option 'mode'"),
    ("caap_fast:refine=0.1", "takes no option 'refine'"),
    ("caap_fast:batch_size=4", "takes no option 'batch_size'"),
    ("caap:coarse=3", "coarse without refine"),
    ("caap:direction=sideways", "direction must be one of"),
    ("caap_adaptive:direction=up", "direction must be one of"),
])
def test_impossible_specs_are_refused_naming_the_option(spec, message):
    with pytest.raises(CaapError, match=message):
        methods.build(spec, build("timm_vit"))


def test_impossible_python_combinations_are_refused_naming_both():
    model = build("timm_vit")
    groups = torch.zeros(GRID, dtype=torch.long)
    with pytest.raises(CaapError, match="groups and refine"):
        CAAP(model, refine=0.5, groups=groups)
    with pytest.raises(CaapError, match="groups and refine"):
        methods.get("caap_adaptive")(model, groups=groups)
    with pytest.raises(CaapError, match="strategy and batch_size"):
        CAAP(model, strategy=Fast(), batch_size=4)
    with pytest.raises(CaapError, match="strategy and direction"):
        CAAP(model, strategy=Exact(), direction="noise")
    with pytest.raises(CaapError, match="one direction"):
        FastThenExact(Fast("noise"), Exact("denoise"))
    with pytest.raises(CaapError, match="refines an Exact strategy"):
        CoarseToFine(Fast())
    with pytest.raises(CaapError, match="strategy must be"):
        CAAP(model, strategy="fast")
    explainer = CAAP(model, refine=0.5)
    with pytest.raises(CaapError, match="groups and refine"):
        explainer.explain(images(1), groups=groups)
    with pytest.raises(CaapError, match="all_classes and classes"):
        CAAP(model).explain(images(1), all_classes=True, classes=[1])
    with pytest.raises(CaapError, match="class 99 is out of range"):
        CAAP(model).explain(images(1), classes=[1, 99])


def test_presets_equal_their_strategy_objects():
    model = build("timm_vit")
    x = images()
    pairs = [(CAAP(model), CAAP(model, strategy=Exact())),
             (FastCAAP(model), CAAP(model, strategy=Fast())),
             (AdaptiveCAAP(model, refine=0.25), CAAP(model, strategy=FastThenExact(fraction=0.25))),
             (CAAP(model, refine=0.5, coarse=2), CAAP(model, strategy=CoarseToFine(Exact(), 0.5, 2)))]
    for preset, explicit in pairs:
        a, b = preset.explain(x), explicit.explain(x)
        assert torch.equal(a.scores, b.scores) and a.meta["strategy"] == b.meta["strategy"]


@pytest.mark.parametrize("name", ["caap", "caap_fast", "caap_adaptive"])
def test_maps_for_chosen_classes_equal_the_all_class_maps(name):
    model = build("timm_vit")
    x = images()
    explainer = methods.get(name)(model, layers=[1, 2])
    full = explainer.explain(x, all_classes=True)
    chosen = explainer.explain(x, target=full.target, classes=[5, 2, 7])
    torch.testing.assert_close(chosen.class_scores, full.class_scores[:, [5, 2, 7]], rtol=1e-5, atol=1e-6)
    assert chosen.meta["classes"] == [5, 2, 7]
    torch.testing.assert_close(chosen.scores, full.scores, rtol=1e-5, atol=1e-6)


def test_fast_maps_of_k_classes_cost_k_backward_passes():
    """The explorer and --top-k ask for K classes: K backward passes (plus one for the targets when they are not
    among the classes), not one per class of the model."""
    model = build("timm_vit")  # 10 classes
    x = images()
    fast = FastCAAP(model, layers=[1, 2])
    target = fast.explain(x).target
    assert fast.explain(x, all_classes=True).meta["backward_passes"] == 10
    assert fast.explain(x, target=target, classes=target.tolist()).meta["backward_passes"] == 2
    others = [c for c in range(10) if c not in target.tolist()][:3]
    assert fast.explain(x, target=target, classes=others).meta["backward_passes"] == 4
    assert fast.explain(x).meta["backward_passes"] == 1


def test_explain_top_k_asks_the_fast_mode_for_k_classes_only(tmp_path, monkeypatch):
    from PIL import Image

    from caap.cli import main
    from caap.methods.caap import fast as fast_module

    calls = []
    real = fast_module.fast_scores

    def counted(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out[3])
        return out

    monkeypatch.setattr(fast_module, "fast_scores", counted)
    Image.new("RGB", (64, 64), (120, 30, 200)).save(tmp_path / "a.png")
    assert main(["explain", str(tmp_path / "a.png"), "--model", "caap-demo", "--method", "caap_fast", "--top-k", "3",
                 "--out", str(tmp_path / "out")]) == 0
    assert calls == [3]  # the top-1 class is among the three: three backward passes, not one per class
