"""The runner's rebuilt plumbing (issue 24): typed options shared by bench and sweep, the data spec in the one
grammar, spec lists split by the registry's names, library errors that name options (the CLI maps them to
flags), and the metric contract that hands the runner scores and curves."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from archs import IMG, build

from caap import metrics
from caap.bench.options import DataSpec, MethodSpec, RunOptions
from caap.bench.runner import BenchConfig
from caap.bench.sweep import SweepConfig, setting_spec
from caap.errors import CaapError, OptionError
from caap.specs import split_list


def test_bench_and_sweep_share_the_run_options_by_name():
    shared = {f.name for f in dataclasses.fields(RunOptions)}
    assert shared <= {f.name for f in dataclasses.fields(BenchConfig)}
    assert shared <= {f.name for f in dataclasses.fields(SweepConfig)}
    sweep = SweepConfig(model="caap-demo", data="synthetic", starts=[0], widths=[2], contexts=["mean"],
                        scores=["logit"], metrics=["deletion"], every=3, dtype="bfloat16")
    bench = BenchConfig(**sweep.run_options(), methods=[setting_spec(0, 2, "mean", "logit")], metrics=["deletion"])
    assert (bench.every, bench.dtype, bench.model) == (3, "bfloat16", "caap-demo")
    with pytest.raises(TypeError):
        BenchConfig("caap-demo", "synthetic", ["caap"], ["deletion"])  # no positional fields to shift


def test_the_sweep_hands_the_runner_typed_settings():
    spec = setting_spec(1, 3, "blur:4", "prob")
    assert spec.options == {"layers": [1, 2, 3], "context": "blur:4", "score": "prob"}
    assert spec.label == "caap:layers=1:4:context=blur:4:score=prob"
    explainer = spec.build(build("timm_vit"), RunOptions(model="x", data="synthetic", batch_size=5))
    assert explainer.layers == [1, 2, 3] and explainer.settings()["batch_size"] == 5
    parsed = MethodSpec.parse("caap:layers=1:3:context=blur:2")
    assert parsed.options == {"layers": "1:3", "context": "blur:2"} and parsed.label == "caap:layers=1:3:context=blur:2"


@pytest.mark.parametrize(("text", "expected"), [
    ("synthetic", DataSpec("synthetic")),
    ("synthetic:conjunction", DataSpec("synthetic", variant="conjunction")),
    ("grid:/data/dev", DataSpec("grid", path="/data/dev")),
    ("grid:/data/dev:threshold=0.7:seed=3", DataSpec("grid", path="/data/dev", options={"threshold": 0.7, "seed": 3})),
    ("/data/images", DataSpec("folder", path="/data/images")),
])
def test_the_data_spec_goes_through_the_one_grammar(text, expected):
    assert DataSpec.parse(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("grid:a:b", "expected grid:DIR"), ("grid:/d:colour=1", "unknown option 'colour'"),
    ("synthetic:a:b", "expected synthetic or synthetic:VARIANT"), ("", "expected an image folder"),
])
def test_bad_data_specs_name_the_option(text, message):
    with pytest.raises(OptionError, match=message) as info:
        DataSpec.parse(text)
    assert str(info.value).startswith("data ") and info.value.as_flag().startswith("--data ")


def test_spec_lists_split_by_the_registrys_names():
    names = {"caap", "rise", "gae", "deletion", "insertion"}
    assert split_list("caap:layers=4,5,rise", names) == ["caap:layers=4,5", "rise"]
    assert split_list("caap:layers=4,5,7,gae:x=1", names) == ["caap:layers=4,5,7", "gae:x=1"]
    assert split_list("rise:masks=8,gae", names) == ["rise:masks=8", "gae"]
    assert split_list("mystery,gae", names) == ["mystery", "gae"]  # an unknown name stays itself (refused later)


def test_library_errors_name_options_and_the_cli_names_flags(capsys):
    from caap.cli import main

    with pytest.raises(OptionError) as info:
        RunOptions(model="caap-demo", data="synthetic", target="best").check()
    assert str(info.value) == "target 'best': expected auto, label or pred"
    assert main(["bench", "--model", "caap-demo", "--data", "synthetic", "--target", "best", "--out", "/tmp/x"]) == 2
    assert "--target" in capsys.readouterr().err
    assert main(["explain", "no.png", "--model", "caap-demo", "--top-k", "0", "--out", "/tmp/x"]) == 2
    assert "--top-k 0" in capsys.readouterr().err
    with pytest.raises(CaapError, match="^top_k 0"):
        from caap.bench.explain import explain_files

        explain_files([], None, None, "/tmp/x", top_k=0)


def test_the_metric_contract_gives_scores_and_curves_through_its_checks():
    model = build("timm_vit")
    x, t, maps = torch.randn(2, 3, IMG, IMG), torch.tensor([1, 2]), torch.rand(2, 4, 4)
    scored = metrics.build("deletion:step=4").score(model, x, t, maps)
    assert scored.values.shape == (2,) and len(scored.curves) == 2 and len(scored.curves[0]["x"]) == 5
    assert torch.equal(scored.values, metrics.build("deletion:step=4")(model, x, t, maps))
    assert metrics.build("sparseness").score(model, x, t, maps).curves is None
    with pytest.raises(CaapError, match="NaN"):
        metrics.build("deletion:step=4").score(model, x, t, torch.full((2, 4, 4), float("nan")))
    assert not metrics.get("deletion").needs_explain and metrics.get("randomization").needs_explain
    deletion = metrics.build("deletion")
    assert deletion.bind(lambda *a: None) is deletion  # a metric that does not re-explain is returned as it is
    calls = []
    bound = metrics.build("randomization").bind(lambda m, x, t: calls.append(len(x)) or torch.rand(len(x), 4, 4))
    bound.score(model, x, t, maps)
    assert calls, "a re-explaining metric calls the explain function it was bound to"


def test_offset_takes_the_other_positions_of_every_and_old_run_folders_still_resume(tmp_path):
    """``--every 4 --offset 1`` is positions 1, 5, 9, …: the half of a spread subset a choice was not made on.
    A config without ``offset`` (folders from before the option) equals one with offset 0."""
    from caap.bench.runner import load, run

    quick = dict(model="caap-demo", data="synthetic", limit=3, every=4, methods=["rollout"], metrics=["sparseness"])
    _, shifted = load(BenchConfig(**quick, offset=1))
    _, plain = load(BenchConfig(**{**quick, "limit": None}))
    assert [shifted[i].id for i in range(3)] == [plain.dataset[k].id for k in (1, 5, 9)]
    assert "offset" not in BenchConfig(**quick).to_dict() and BenchConfig(**quick, offset=1).to_dict()["offset"] == 1
    run(BenchConfig(**quick), tmp_path / "run", progress=False, report=False)
    run(BenchConfig(**quick, offset=0), tmp_path / "run", progress=False, report=False)  # resumes
    with pytest.raises(CaapError, match="offset"):
        run(BenchConfig(**quick, offset=1), tmp_path / "run", progress=False, report=False)
    for bad in (4, -1, True):
        with pytest.raises(OptionError, match="offset"):
            BenchConfig(**quick, offset=bad).check()
