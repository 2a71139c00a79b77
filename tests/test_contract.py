"""The one contract of every method and metric: the base class owns the call, options are checked, the
registries are open, results round-trip through files, and the model card lives with the adapter."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch
from archs import GRID, IMG, build, explainable
from conftest import FAST
from tolerance import assert_rounding_close

from caap import Attribution, methods, metrics
from caap.adapters import GenericAdapter, adapt
from caap.errors import CaapError, UnsupportedModelError
from caap.methods import Explainer, Maps
from caap.specs import parse, parse_layers, parse_spec


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def model():
    return build("timm_vit")


@pytest.mark.parametrize("name", methods.available())
def test_unknown_options_are_refused_by_name(model, name):
    with pytest.raises(CaapError, match=f"method '{name}' takes no option 'bogus'"):
        methods.get(name)(model, bogus=1)
    with pytest.raises(CaapError, match=f"method 'x' is not|method '{name}:bogus=1'"):
        methods.build(f"{name}:bogus=1", model)


@pytest.mark.parametrize("name", methods.available())
def test_settings_are_complete_and_land_in_the_metadata(model, name):
    explainer = methods.get(name)(model, **FAST.get(name, {}))
    settings = explainer.settings()
    assert settings["method"] == name and {"dtype", "device"} <= set(settings)
    json.dumps(settings)  # JSON-friendly
    for key, value in FAST.get(name, {}).items():
        assert value in settings.values(), (key, settings)
    att = explainer.explain(images(1))
    resolved = {"batch_size"}  # CAAP records the chunk size it used
    assert {k: att.meta[k] for k in settings if k not in resolved} == {k: v for k, v in settings.items()
                                                                         if k not in resolved}


def test_call_options_are_checked(model):
    with pytest.raises(CaapError, match="method 'rollout' takes no call option 'all_classes'"):
        methods.get("rollout")(model).explain(images(), all_classes=True)
    with pytest.raises(CaapError, match="all_classes must be True or False"):
        methods.get("caap")(model).explain(images(), all_classes="yes")


@pytest.mark.parametrize("name", ["raw_attention", "rollout", "gae", "gradcam", "lrp", "saliency",
                                  "input_x_gradient"])
def test_target_comes_from_the_one_forward_the_method_needs(model, name, monkeypatch):
    calls = {"n": 0}
    original = type(model).forward_head

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward_head", counted)
    methods.get(name)(model).explain(images())
    assert calls["n"] == 1


def test_the_model_is_placed_once_not_per_call(model, monkeypatch):
    explainer = methods.get("rollout")(model, device="cpu")
    moves = {"n": 0}
    original = torch.nn.Module.to

    def spy(self, *args, **kwargs):
        moves["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    for _ in range(3):
        explainer.explain(images(1))
    assert moves["n"] == 0


def test_a_user_method_joins_the_registry_and_the_spec_grammar(model):
    @methods.register
    class Constant(Explainer):
        """Every patch gets ``value``."""

        name = "test_constant"

        def __init__(self, model, value: float = 1.0, **kwargs) -> None:
            super().__init__(model, **kwargs)
            self.value = float(value)

        def settings(self) -> dict:
            return {**super().settings(), "value": self.value}

        def _attribute(self, images, target, *, grid, forward):
            return Maps(torch.full((images.shape[0], *grid), self.value))

    try:
        assert "test_constant" in methods.available()
        att = methods.build("test_constant:value=2.5", model).explain(images(), target=[1, 2])
        assert torch.equal(att.scores, torch.full((2, *GRID), 2.5)) and att.target.tolist() == [1, 2]
        assert att.meta["value"] == 2.5 and att.method == "test_constant"
        with pytest.raises(CaapError, match="already registered"):
            methods.register(type("Other", (Constant,), {"name": "caap"}))
    finally:
        methods.METHODS.unregister("test_constant")


def test_a_user_metric_joins_the_registry():
    @metrics.register
    class MeanMap(metrics.Metric):
        name = "test_mean_map"

        def evaluate(self, model, images, targets, maps, masks):
            return maps.flatten(1).mean(1)

    try:
        m = metrics.build("test_mean_map")
        assert m(None, images(2), torch.tensor([0, 1]), torch.ones(2, *GRID)).tolist() == [1.0, 1.0]
    finally:
        metrics.METRICS.unregister("test_mean_map")
    assert isinstance(metrics.build("deletion:step=4"), metrics.CurveMetric)
    assert not isinstance(metrics.build("pointing_game"), metrics.CurveMetric)


@pytest.mark.parametrize(("spec", "message"), [
    ("rise:masks=100:seed=x", "method 'rise:masks=100:seed=x': seed must be an int, got 'x'"),
    ("rise:masks=0", "masks must be a positive int"),
    ("caap:layers=4-8", "bad layers '4-8'"),
    ("caap:context=fog", "unknown context 'fog'"),
    ("caap:4", "expected KEY=VALUE after 'caap'"),
    ("caap:layers=1:layers=2", "given twice"),
    ("nope", "unknown method 'nope'"),
])
def test_bad_specs_are_one_line_errors(model, spec, message):
    with pytest.raises(CaapError, match=message) as info:
        methods.build(spec, model)
    assert "\n" not in str(info.value)


def test_one_grammar_for_methods_metrics_contexts_and_layers(model):
    assert parse_spec("caap:layers=4:8:context=blur:8:score=prob") == (
        "caap", {"layers": "4:8", "context": "blur:8", "score": "prob"})
    assert parse("noise:0.5:3") == parse("noise:0.5:3") and parse("noise:0.5:3").args == (0.5, 3)
    assert parse("caap:compile=true").options == {"compile": True}
    assert parse_layers("4:8") == [4, 5, 6, 7] and parse_layers("1,3") == [1, 3] and parse_layers(2) == [2]
    explainer = methods.build("caap:layers=1:3:context=blur:2", model)  # a nested spec: positional form
    assert explainer.layers == [1, 2] and explainer.context.describe() == "blur:2"
    from caap.core.contexts import make_context

    assert make_context("noise:std=0.5:seed=3").describe() == "noise:0.5:3" == make_context("noise:0.5:3").describe()
    assert methods.build("caap:context=noise:0.5:3", model).context.describe() == "noise:0.5:3"
    assert metrics.build("deletion:step=4:canvas=blur:2").canvas.describe() == "blur:2"


def test_attribution_round_trips_through_a_file_without_pickle(model, tmp_path):
    att = methods.get("caap")(model, layers=[1]).explain(images(), all_classes=True)
    path = att.save(tmp_path / "maps.safetensors")
    back = Attribution.load(path)
    assert torch.equal(back.scores, att.scores) and torch.equal(back.target, att.target)
    assert torch.equal(back.class_scores, att.class_scores)
    assert back.input_size == att.input_size and back.method == "caap"
    assert torch.equal(back.meta["context_score"], att.meta["context_score"])
    assert back.meta["layers"] == [1] and back.meta["context"] == "mean"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CaapError, match="not a caap attribution file"):
        Attribution.load(tmp_path / "other.safetensors")
    with pytest.raises(CaapError, match="does not exist"):
        Attribution.load(tmp_path / "missing.safetensors")


def test_import_caap_gives_the_subpackages_without_pyplot():
    code = ("import sys, caap; caap.metrics.get('deletion'); caap.methods.get('caap'); caap.viz.grid_figure; "
            "caap.bench.runner; caap.data.datasets; assert 'matplotlib.pyplot' not in sys.modules, 'pyplot'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_model_card_lives_with_the_adapter(tmp_path):
    from caap.adapters.demo import load_demo_model

    demo = load_demo_model()
    adapter = adapt(demo)
    assert adapter.card.defaults == {"layers": [0, 1, 2, 3]} and adapter.card.class_names[:2] == ("disk", "square")
    assert not [k for k in vars(demo) if k.startswith("caap")]  # nothing patched onto the model
    assert methods.get("caap")(demo).layers == [0, 1, 2, 3]
    import transformers as tf

    hf = build("hf_vit")
    hf.config.id2label = {i: f"thing {i}" for i in range(10)}
    hf.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3],
                                                                   "image_std": [0.4, 0.5, 0.6]}))
    loaded = adapt(tf.ViTForImageClassification.from_pretrained(tmp_path))
    assert loaded.normalization.mean == (0.1, 0.2, 0.3) and loaded.normalization.std == (0.4, 0.5, 0.6)
    assert loaded.card.class_names[3] == "thing 3" and loaded.card.num_classes == 10


def test_a_generic_adapter_names_the_capability_it_lacks():
    from caap.adapters import AttentionCapture, BlockViews, LinearRules, require

    torch_vit = build("generic_torch")
    adapter = explainable("generic_torch", torch_vit)
    with pytest.raises(UnsupportedModelError, match="no linear_block"):
        methods.get("lrp")(adapter)
    with pytest.raises(UnsupportedModelError, match="no head_modules"):
        adapter.head_modules()
    for capability, name in ((AttentionCapture, "capture_attention"), (BlockViews, "block_view"),
                             (LinearRules, "linear_block")):
        with pytest.raises(UnsupportedModelError, match=f"GenericAdapter for TorchViT has no {name}"):
            require(adapter, capability)
    timm_adapter = adapt(build("timm_vit"))
    assert require(timm_adapter, BlockViews) is timm_adapter
    no_patch = GenericAdapter(torch_vit, torch_vit.embed, torch_vit.layers, torch_vit.head, num_prefix=1, grid=GRID)
    with pytest.raises(UnsupportedModelError, match="patch_size"):
        _ = no_patch.patch_size


def test_adapt_never_changes_the_callers_adapter():
    from caap.core.contexts import Normalization

    adapter = adapt(build("timm_vit"))
    before = adapter.normalization
    other = adapt(adapter, Normalization((0.5,) * 3, (0.5,) * 3))
    assert adapter.normalization == before and other.normalization.mean == (0.5, 0.5, 0.5)
    assert other is not adapter and other.model is adapter.model and adapt(adapter) is adapter
    explainer = methods.get("saliency")(adapter, normalization=Normalization((0.2,) * 3, (0.3,) * 3))
    assert adapter.normalization == before and explainer.adapter.normalization.mean == (0.2, 0.2, 0.2)


SEEDED = {"smoothgrad": {"samples": 3}, "rise": {"masks": 16}, "caap": {"context": "noise:1:3"},
          "caap_fast": {"context": "noise:1:3"}, "integrated_gradients": {"steps": 4, "baseline": "noise:1:3"}}


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_seeded_methods_give_each_image_the_same_map_in_any_batch(model, name):
    explainer = methods.get(name)(model, **SEEDED[name])
    x = images(3)
    together = explainer.explain(x, target=[1, 2, 3]).scores
    for i in range(3):
        alone = explainer.explain(x[i : i + 1], target=[[1, 2, 3][i]]).scores[0]
        assert_rounding_close(alone, together[i])


@pytest.mark.parametrize("device", ["meta", "mps", "xpu", "not-a-device", "cuda"])
def test_unsupported_devices_are_refused_before_the_model_moves(device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    model = build("timm_vit")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CaapError, match="expected cpu, cuda or cuda:N|CUDA is not available"):
        methods.get("caap")(model, device=device)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("name", methods.available())
def test_bad_inputs_to_every_method_are_caap_errors(model, name):
    explainer = methods.get(name)(model, **FAST.get(name, {}))
    x = images(2)
    reference = explainer.explain(x, target=[1, 2]).scores
    torch.testing.assert_close(explainer.explain(x.double(), target=[1, 2]).scores, reference)  # cast
    assert explainer.explain(x.bfloat16(), target=[1, 2]).scores.shape == reference.shape
    nan = x.clone()
    nan[1, 0, 3, 3] = float("nan")
    for bad, message in [(x[:0], "empty batch"), (nan, "image 1 of the batch holds NaN"),
                         (x.int(), "floating point")]:
        with pytest.raises(CaapError, match=message):
            explainer.explain(bad)
    for target in (2**64, -1, [1]):
        with pytest.raises(CaapError, match="target"):
            explainer.explain(x, target=target)


def test_bad_groups_normalization_and_broken_models_are_caap_errors(model):
    with pytest.raises(CaapError, match="groups must be an integer map"):
        methods.get("caap")(model).explain(images(), groups="abc")
    with pytest.raises(CaapError, match="groups patch nothing in image 0"):
        methods.get("caap")(model).explain(images(), groups=-torch.ones(GRID, dtype=torch.int64))
    with pytest.raises(CaapError, match="normalization must be a caap Normalization"):
        methods.get("rollout")(model, normalization="x")
    with pytest.raises(CaapError, match="internal_batch_size must be a positive int"):
        methods.get("smoothgrad")(model, internal_batch_size="8")
    broken = build("timm_vit")
    with torch.no_grad():
        broken.head.weight.fill_(float("nan"))
    with pytest.raises(CaapError, match="not finite"):
        methods.get("caap")(broken).explain(images())
    with pytest.raises(CaapError, match="target 10 is out of range"):
        metrics.build("deletion")(model, images(1), torch.tensor([10]), torch.zeros(1, *GRID))


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", methods.available())
def test_two_threads_on_one_model_give_the_sequential_maps(name, training):
    """Issue 13: concurrent calls on one shared model are serialised by its lock, not interleaved."""
    import threading

    from modelstate import assert_untouched, snapshot

    shared = build("timm_conv_stem")  # BatchNorm in the stem: training mode would change its statistics
    shared.train(training)
    before = snapshot(shared)
    explainer = methods.get(name)(shared, **FAST.get(name, {}))
    x = images(2)
    expected = [explainer.explain(x[i : i + 1], target=[i]).scores for i in range(2)]
    results, errors = [None, None], []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = methods.get(name)(shared, **FAST.get(name, {})).explain(x[i : i + 1], target=[i]).scores
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert_untouched(shared, before)


def test_a_slow_dtype_for_the_device_warns(monkeypatch):
    import caap.core.cpu as cpu

    model = build("timm_vit")
    with pytest.warns(RuntimeWarning, match="float16 on the CPU is emulated and slower"):
        methods.get("saliency")(model, dtype=torch.float16)
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)  # a CPU with AVX512-BF16 / AMX: bfloat16 gains
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        methods.get("saliency")(model, dtype=torch.bfloat16)
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)  # an AVX2-only CPU: bfloat16 is emulated
    with pytest.warns(RuntimeWarning, match="without native bfloat16 instructions"):
        methods.get("saliency")(model, dtype=torch.bfloat16)


def test_the_cpu_flags_say_whether_bfloat16_is_native(monkeypatch, tmp_path):
    import caap.core.cpu as cpu

    def flags(text):
        (tmp_path / "cpuinfo").write_text(text)
        monkeypatch.setattr(cpu, "Path", lambda _: tmp_path / "cpuinfo")
        cpu.cpu_flags.cache_clear()
        return cpu.native_bf16()

    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    try:
        assert flags("processor : 0\nflags : fpu avx2 fma\n") is False  # AMD EPYC family 25 (Zen 3)
        assert flags("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n") is True  # Zen 4, Cooper Lake
        assert flags("processor : 0\nflags : fpu avx512f amx_bf16 amx_tile\n") is True  # Sapphire Rapids
        assert flags("processor : 0\n") is None
    finally:
        cpu.cpu_flags.cache_clear()


def test_long_calls_show_progress_unless_turned_off(monkeypatch, capsys):
    import caap.methods.base as base

    monkeypatch.setattr(base, "PROGRESS_DELAY", 0.0)  # every call counts as long
    explainer = methods.get("rise")(build("timm_vit"), masks=16)
    explainer.explain(images(1))
    assert "rise" in capsys.readouterr().err
    explainer.explain(images(1), progress=False)
    assert "rise" not in capsys.readouterr().err
    with pytest.raises(CaapError, match="progress must be True or False"):
        explainer.explain(images(1), progress="yes")
