"""The ``caap`` command: thin argument parsing over the library (:mod:`caap.bench`), and printing.

Exit status: 0 on success, 2 on bad input (one line on stderr, no traceback), 130 when interrupted.
Methods and metrics are given in caap's one option grammar, ``NAME[:KEY=VALUE…]`` (:mod:`caap.specs`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from caap.bench import flags
from caap.errors import CaapError, OptionError
from caap.specs import parse_size
from caap.version import __version__


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(?!caap\b)")  # other packages' notes
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(?!caap\b)")  # about themselves
        return _main(argv)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr, ``caap: warning: …`` (not Python's two-line form with the source line)."""
    print(f"caap: warning: {str(message).splitlines()[0] if str(message) else category.__name__}", file=sys.stderr)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed as one line)
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CaapError as exc:
        print(f"caap: error: {exc.as_flag() if isinstance(exc, OptionError) else exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("caap: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # an output (or input) location the system refuses: --out a file, no space, …
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"caap: error: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2


class _Parser(argparse.ArgumentParser):
    """argparse with caap's error style: one line on stderr, exit status 2, no usage block."""

    def error(self, message: str):
        where = self.prog.removeprefix("caap").strip()
        self.exit(2, f"caap: error: {where + ': ' if where else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    from caap.methods import METHODS  # the registries feed the choices listed in --help
    from caap.metrics import METRICS

    method_names, metric_names = ", ".join(METHODS.available()), ", ".join(METRICS.available())
    method_help = (f"attribution method as NAME[:KEY=VALUE…], e.g. caap:layers=4:8:context=blur or rise:masks=500 "
                   f"(default caap); NAME is one of {method_names}")
    methods_help = f"comma-separated NAME[:KEY=VALUE…], or 'all' (NAME: {method_names})"
    metrics_help = f"comma-separated NAME[:KEY=VALUE…] or 'all', e.g. deletion:step=4 (NAME: {metric_names})"
    parser = _Parser(prog="caap", description="Causal Attribution via Activation Patching for ViTs")
    parser.add_argument("--version", action="version", version=f"caap {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("explain", help="explain images with CAAP and write heatmaps, scores and results.json")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (every image under them)")
    _model_args(p)
    p.add_argument("--method", default="caap", help=method_help)
    p.add_argument("--layers", help="shorthand for the method option layers=: START:STOP (Python range), a list "
                   "4,5,7 or one index (default: the model's band, else the middle third)")
    p.add_argument("--context", help="shorthand for context=: mean, black, blur[:SIGMA], noise[:STD[:SEED]] or an "
                   "image file (default: mean)")
    p.add_argument("--score", choices=["logit", "prob", "logprob"], help="shorthand for score= (default: logit)")
    p.add_argument("--target", default="auto",
                   help="'auto' (top-1 prediction), a class index or a class name (a unique prefix: robin)")
    _figure_args(p)
    p.add_argument("--html", action="store_true", help="also explore.html: the run's maps in one self-contained page")
    p.add_argument("--top-k", type=int, default=1, help="with --target auto: maps for the K top classes (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="shorthand for batch_size= (default: auto)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("compare", help="images x methods in one grid image (a row per image)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    _figure_args(p)
    _model_args(p)
    p.add_argument("--methods", default="caap,rollout,gae,gradcam,lrp,occlusion,input_insertion,integrated_gradients",
                   help=methods_help)
    p.add_argument("--target", default="auto",
                   help="'auto' (top-1 prediction), a class index or a class name (a unique prefix: robin)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="methods x metrics on a dataset; resumable, shards under torchrun")
    _model_args(p)
    _data_args(p)
    p.add_argument("--methods", default="caap,rollout,gae,gradcam,occlusion,input_insertion", help=methods_help)
    p.add_argument("--metrics", default="deletion,insertion", help=metrics_help)
    p.add_argument("--out", required=True, help="run folder (re-running the same command resumes)")
    p.add_argument("--rescore", action="store_true", help="recompute finished records' metrics from their saved maps")
    p.add_argument("--score-batch", type=int, default=1, help="maps scored together (metric forwards batched)")
    p.add_argument("--allow-code-change", action="store_true",
                   help="resume a run that other code started (refused by default; recorded in config.json)")
    p.add_argument("--compare", metavar="METHOD", help="also print (and write compare_METHOD.md) paired differences")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("verdict", help="does a method beat every other method of the runs, on every canvas, "
                       "Holm-corrected? (paired bootstrap / exact McNemar over the images; docs/EVALUATION.md)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (caap bench's, or shipped evidence with "
                   "scores.csv); several are joined by image id, images not in every run named and left out")
    p.add_argument("--method", required=True, help="the method's label in the runs, e.g. caap or "
                   "caap:direction=both:layers=4:8:context=blur")
    p.add_argument("--family", default="", help="comma-separated method names or labels that are the method's own "
                   "and not rivals (default: the method's name), e.g. caap,caap_fast,caap_adaptive")
    p.add_argument("--metrics", default="", help="comma-separated metric names or specs to judge (default: all)")
    p.add_argument("--json", metavar="FILE", help="also write the verdict as JSON (replaces only an earlier verdict)")
    p.set_defaults(func=cmd_verdict)

    p = sub.add_parser("sweep", help="CAAP layer band x context x score sweep: a bench run over generated specs "
                       "caap:layers=S:E:context=C:score=K")
    _model_args(p)
    _data_args(p)
    p.add_argument("--starts", default="0,2,4,6", help="first patched block of each band")
    p.add_argument("--widths", default="1,2,4", help="band widths (blocks)")
    p.add_argument("--contexts", default="mean,blur", help="contexts, comma-separated (e.g. mean,blur:8)")
    p.add_argument("--scores", default="logit", help="scores, comma-separated")
    p.add_argument("--metrics", default="deletion,insertion", help=metrics_help)
    p.add_argument("--out", required=True, help="sweep folder (re-running resumes)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("explore", help="one self-contained HTML page: every method's maps for the top-k classes, "
                       "a class and method switch, an opacity slider and each cell's value on hover")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    _model_args(p)
    p.add_argument("--methods", default="caap,gae,transformer_attribution,rollout,saliency", help=methods_help)
    p.add_argument("--top-k", type=int, default=5, help="classes per image (default 5; CAAP's cost one call)")
    p.add_argument("--target", default="auto", help="'auto' (the top-k classes), a class index or a class name")
    p.add_argument("--out", required=True, help="output folder (explore.html)")
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("demo", help="offline demo: explain controlled-evidence images with the embedded model")
    p.add_argument("--variant", default="simple", choices=["simple", "conjunction"])
    p.add_argument("--images", type=int, default=8, help="number of generated images (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated demo images")
    p.add_argument("--out", default="caap-demo", help="output folder (default ./caap-demo)")
    p.set_defaults(func=cmd_demo)
    return parser


def _figure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="png", choices=["png", "svg", "pdf"], help="figure format (default png)")
    p.add_argument("--display", default="bilinear", choices=["bilinear", "nearest"],
                   help="patch maps shown smooth (bilinear, default) or patch-exact (nearest)")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="an image folder (ImageNet WordNet ids in names), synthetic[:variant], or "
                        "grid:DIR[:threshold=P][:seed=S] (the grid pointing game: 2x2 grids of DIR's images, masks = "
                        "the explained cell)")
    p.add_argument("--masks", help="folder of <stem>.png masks for an image folder")
    p.add_argument("--limit", type=int, help="use the first N images (after --every)")
    p.add_argument("--every", type=int, default=1, help="use every K-th image (a spread subset; default 1)")
    p.add_argument("--offset", type=int, default=0, help="the first image of --every's subset (0 to K-1)")
    p.add_argument("--labels", help="CSV of file,class rows for an image folder without WordNet ids in its names")
    p.add_argument("--target", default="auto", choices=["auto", "label", "pred"],
                   help="explain each image's label, the model's prediction, or (auto, the default) the label "
                        "where the image has one and the prediction elsewhere")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: where the model is, the CPU)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="CAAP's fast modes: autocast dtype (default float32)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="runs per forward chunk, for the methods that take batch_size (default: automatic)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="timm model name (e.g. deit_tiny_patch16_224), a Hugging Face "
                   "model folder, hf-hub:ORG/NAME or caap-demo")
    p.add_argument("--weights", help="local .safetensors or .pth weights (default: pretrained from the hub)")
    p.add_argument("--img-size", type=_size, default=None, metavar="N|HxW",
                   help="timm models: build for this input size, the weights' position embeddings resampled")
    p.add_argument("--prompts", help="an image-text model (open_clip:ARCH, a CLIP or SigLIP folder) as the zero-shot "
                   "classifier of these prompts: a,b,c, or @FILE for a UTF-8 file of one per line (the value is "
                   "read as a file only after @)")
    p.add_argument("--templates", help="with --prompts as class names: templates such as 'a photo of a {}.' "
                   "(';'-separated), each class's embedding averaged over them")


def cmd_explain(args: argparse.Namespace) -> int:
    from caap.bench.explain import explain_files, load_model
    from caap.data.datasets import expand_image_paths
    from caap.data.images import load_image
    from caap.methods import METHODS
    from caap.specs import parse_spec

    if args.top_k < 1:
        raise CaapError(f"--top-k {args.top_k}: expected a positive number of classes")
    if args.target != "auto" and args.top_k != 1:
        raise CaapError(f"--top-k {args.top_k} applies to --target auto; got --target {args.target}")
    flags.target(args.target)  # an index is checked now, a name once the model's class names are known
    images = expand_image_paths(args.images)
    for path in images:  # every image checked before the model is loaded
        load_image(path)
    name = parse_spec(args.method, "method")[0]
    METHODS.get(name)
    loaded = load_model(args.model, args.weights, [name], *flags.prompts(args), img_size=args.img_size)
    target = flags.target(args.target, loaded)
    spec, placement = flags.method_spec(args.method, args, loaded)
    explainer = spec.build(loaded.model, placement)
    settings = {"model": args.model, "weights": str(args.weights) if args.weights else "pretrained",
                "method": name, "spec": args.method, **({"context": args.context} if args.context else {}),
                "target": args.target, "top_k": args.top_k,
                "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in loaded.data_config.items()}}
    results = explain_files(images, loaded, explainer, args.out, target=target, top_k=args.top_k,
                            settings=settings, fmt=args.format, display=args.display, html=args.html)
    print(f"explained {len(results['images'])} image(s) in {results['total_seconds']:.1f} s -> {args.out}")
    return 0


def _load_checked(args: argparse.Namespace, specs: list[str], paths: list) -> tuple:
    """Methods, images and an index ``--target`` checked before the model loads; then ``(model, target)``."""
    from caap.bench.explain import load_model
    from caap.data.images import load_image
    from caap.methods import METHODS

    for spec in specs:
        METHODS.get(spec)
    flags.target(args.target)
    for path in paths:
        load_image(path)
    loaded = load_model(args.model, args.weights, specs, *flags.prompts(args), img_size=args.img_size)
    return loaded, flags.target(args.target, loaded)


def _size(text: str) -> int | tuple[int, int]:
    try:
        return parse_size(text)
    except CaapError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_compare(args: argparse.Namespace) -> int:
    from caap.bench.explain import compare
    from caap.data.datasets import expand_image_paths

    specs = flags.specs(args.methods)
    images = expand_image_paths(args.images)
    loaded, target = _load_checked(args, specs, images)
    summary = compare(images, loaded, specs, args.out, target, fmt=args.format, display=args.display)
    figure = Path(args.out) / summary["figure"]
    print(f"compared {len(summary['methods'])} methods on {len(images)} image(s) -> {figure}")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from caap.bench.explore import explore
    from caap.data.datasets import expand_image_paths

    specs = flags.specs(args.methods)
    images = expand_image_paths(args.images)
    loaded, target = _load_checked(args, specs, images)
    page = explore(images, loaded, specs, args.out, top_k=1 if target is not None else args.top_k, target=target)
    print(f"explored {len(images)} image(s) with {len(specs)} method(s) -> {page}")
    return 0


def _run_options(args: argparse.Namespace) -> dict:
    """The run-wide options of bench and sweep, checked."""
    from caap.core.state import check_device

    device = str(check_device(args.device, "--device")) if args.device is not None else None
    prompts, templates = flags.prompts(args)
    return {"model": args.model, "weights": args.weights, "img_size": args.img_size, "prompts": prompts,
            "templates": templates, "data": args.data, "masks": args.masks, "limit": args.limit, "every": args.every,
            "offset": args.offset, "labels": args.labels, "target": args.target,
            "device": device, "dtype": args.dtype, "batch_size": args.batch_size}


def cmd_bench(args: argparse.Namespace) -> int:
    from caap.bench.runner import BenchConfig, run

    config = BenchConfig(**_run_options(args), methods=flags.specs(args.methods),
                         metrics=flags.specs(args.metrics, "metric"))
    if args.compare is not None and args.compare not in config.methods:
        raise CaapError(f"--compare {args.compare!r} is not one of --methods {config.methods}")
    table = run(config, args.out, rescore=args.rescore, allow_code_change=args.allow_code_change,
                score_batch=args.score_batch)
    if table is not None:
        print((Path(args.out) / "table.md").read_text(), end="")
        if args.compare is not None:
            from caap.bench.store import RunStore
            from caap.bench.table import paired_table
            from caap.io import atomic_write_bytes
            from caap.specs import file_stem

            view = paired_table(RunStore(args.out), config.methods, config.metrics, args.compare)
            atomic_write_bytes(Path(args.out) / f"compare_{file_stem(args.compare)}.md", view.encode())
            print("\n" + view, end="")
    return 0


def cmd_verdict(args: argparse.Namespace) -> int:
    from caap.bench.store import RunStore
    from caap.bench.verdict import verdict, write_json

    runs = [RunStore(r).scores() for r in args.runs]
    result = verdict(runs, args.method, family=[f for f in args.family.split(",") if f.strip()],
                     metrics=[m for m in args.metrics.split(",") if m.strip()])
    if args.json:
        write_json(result, args.json)
    print(result.markdown(), end="")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from caap.bench.sweep import SweepConfig, sweep
    from caap.core.contexts import CONTEXTS, make_context
    from caap.core.scores import make_score
    from caap.specs import split_list

    contexts = split_list(args.contexts, CONTEXTS)
    scores = [c for c in args.scores.split(",") if c]
    for c in contexts:
        make_context(c)
    for s in scores:
        make_score(s)
    widths = flags.ints(args.widths, "--widths")
    if 0 in widths:
        raise CaapError(f"--widths {args.widths!r}: a band has at least one block")
    config = SweepConfig(**_run_options(args), starts=flags.ints(args.starts, "--starts"), widths=widths,
                         contexts=contexts, scores=scores, metrics=flags.specs(args.metrics, "metric"))
    summary = sweep(config, args.out)
    for s in summary["settings"]:
        means = "  ".join(f"{k} {v:.4f}" for k, v in s["means"].items())
        print(f"layers {s['start']}:{s['start'] + s['width']}  {s['context']:8s} {s['score']:8s} {means}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from caap.bench.demo import run_demo

    results = run_demo(args.variant, args.images, args.seed, args.out)
    n = results["images"]
    print(f"caap demo ({args.variant}): {n} images, model accuracy {results['accuracy']:.0%}, "
          f"pointing game {results['hits']}/{n} = {results['pointing_game']:.0%} (top patch on the class object)")
    print(f"wrote {args.out}/grid.png, demo_*.png, demo_*.npy, results.json")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
