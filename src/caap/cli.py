"""The ``caap`` command: thin argument parsing over the library.

Exit status: 0 on success, 2 on bad input (one line on stderr, no traceback), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from caap.errors import CaapError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CaapError as exc:
        print(f"caap: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("caap: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caap", description="Causal Attribution via Activation Patching for ViTs")
    parser.add_argument("--version", action="version", version=f"caap {_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("explain", help="explain images with CAAP and write heatmaps, scores and results.json")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    _model_args(p)
    p.add_argument("--method", default="caap", help="attribution method (default caap; see caap.methods.available())")
    p.add_argument("--layers", help="patched blocks: START:STOP (Python range), a list 4,5,7 or one index "
                   "(default: the middle third)")
    p.add_argument("--context", default="mean",
                   help="mean, black, blur[:SIGMA], noise[:STD[:SEED]] or an image file (default: mean)")
    p.add_argument("--score", default="logit", choices=["logit", "prob", "logprob"], help="score read per class")
    p.add_argument("--target", default="auto", help="'auto' (top-1 prediction) or a class index")
    p.add_argument("--top-k", type=int, default=1, help="with --target auto: maps for the K top classes (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="patched runs per forward chunk (default: auto)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("compare", help="one image, several methods side by side in one grid image")
    p.add_argument("image", metavar="IMAGE")
    _model_args(p)
    p.add_argument("--methods", default="caap,rollout,gae,gradcam,lrp,occlusion,input_insertion,integrated_gradients",
                   help="comma-separated method names")
    p.add_argument("--target", default="auto", help="'auto' (top-1 prediction) or a class index")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="methods x metrics on a dataset; resumable, shards under torchrun")
    _model_args(p)
    _data_args(p)
    p.add_argument("--methods", default="caap,rollout,gae,gradcam,occlusion,input_insertion",
                   help="comma-separated NAME[:KEY=VALUE…], e.g. caap,caap:layers=2:6:context=blur,rise:masks=500")
    p.add_argument("--metrics", default="deletion,insertion",
                   help="comma-separated NAME[:KEY=VALUE…], e.g. deletion:step=4,insertion:step=4:canvas=blur")
    p.add_argument("--out", required=True, help="run folder (re-running the same command resumes)")
    p.add_argument("--rescore", action="store_true",
                   help="recompute the metrics of finished records from their saved maps")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("sweep", help="CAAP layer band x context x score sweep scored by the metrics")
    _model_args(p)
    _data_args(p)
    p.add_argument("--starts", default="0,2,4,6", help="first patched block of each band")
    p.add_argument("--widths", default="1,2,4", help="band widths (blocks)")
    p.add_argument("--contexts", default="mean,blur", help="contexts, comma-separated")
    p.add_argument("--scores", default="logit", help="scores, comma-separated")
    p.add_argument("--metrics", default="deletion,insertion")
    p.add_argument("--out", required=True, help="sweep folder (re-running resumes)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("demo", help="offline demo: explain controlled-evidence images with the embedded model")
    p.add_argument("--variant", default="simple", choices=["simple", "conjunction"])
    p.add_argument("--images", type=int, default=8, help="number of generated images (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated demo images")
    p.add_argument("--out", default="caap-demo", help="output folder (default ./caap-demo)")
    p.set_defaults(func=cmd_demo)
    return parser


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="an image folder (ImageNet WordNet ids in names) or synthetic[:variant]")
    p.add_argument("--masks", help="folder of <stem>.png masks for an image folder")
    p.add_argument("--limit", type=int, help="use the first N images (after --every)")
    p.add_argument("--every", type=int, default=1, help="use every K-th image (a spread subset; default 1)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="timm model name (e.g. deit_tiny_patch16_224) or caap-demo")
    p.add_argument("--weights", help="local .safetensors or .pth weights (default: pretrained from the hub)")


def _load_model(args: argparse.Namespace):
    """``(model, adapter, data_config, transform, normalization)`` for ``--model`` / ``--weights``."""
    from timm.data import create_transform, resolve_model_data_config

    from caap.adapters import adapt
    from caap.core.contexts import Normalization
    from caap.models import create_model

    model = create_model(args.model, args.weights)
    adapter = adapt(model)
    cfg = resolve_model_data_config(model)
    return model, adapter, cfg, create_transform(**cfg), Normalization(tuple(cfg["mean"]), tuple(cfg["std"]))


def make_explainer(name: str, model, options: dict):
    """``caap.methods.get(name)(model, **options)``, passing only the options the method takes.

    An option the user set (not None) that the method does not take is an error, not silently dropped.
    """
    import inspect

    from caap import methods

    cls = methods.get(name)
    accepted: set[str] = set()
    for klass in cls.__mro__:  # a subclass that passes **kwargs on takes its base's options too
        params = inspect.signature(klass.__init__).parameters if "__init__" in vars(klass) else {}
        accepted |= set(params)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    renamed = {"context": "baseline"} if "baseline" in accepted else {}
    kwargs, unused = {}, []
    for key, value in options.items():
        target = renamed.get(key, key)
        if target in accepted or key in ("device", "dtype", "normalization"):
            if value is not None:
                kwargs[target] = value
        elif value is not None:
            unused.append(key)
    if unused:
        raise CaapError(f"method {name!r} takes no {', '.join('--' + u.replace('_', '-') for u in unused)}")
    return cls(model, **kwargs)


def class_maps(explainer, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Maps ``[K, h, w]`` of one image for several classes (one CAAP call for all of them)."""
    from caap import CAAP

    if isinstance(explainer, CAAP) and len(classes) > 1:
        return explainer.explain(x, target=classes[0], all_classes=True).class_scores[0, classes]
    return torch.stack([explainer.explain(x, target=c).scores[0] for c in classes])


def _version() -> str:
    from caap import __version__

    return __version__


def _class_names(model: torch.nn.Module, num_classes: int) -> list[str]:
    names = getattr(model, "caap_class_names", None)
    if names and len(names) == num_classes:
        return list(names)
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i).split(",")[0] for i in range(num_classes)]
    return [f"class {i}" for i in range(num_classes)]


def _parse_target(text: str, num_classes: int) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise CaapError(f"--target {text!r}: expected 'auto' or a class index") from None
    if not 0 <= value < num_classes:
        raise CaapError(f"--target {value} is out of range; expected a class index in 0..{num_classes - 1}")
    return value


def _device(text: str | None) -> torch.device:
    if text is None:
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise CaapError(f"--device {text!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CaapError(f"--device {text!r}: CUDA is not available on this machine")
    return device


def _unique_stems(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = p.stem
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        stems.append(stem if n == 0 else f"{stem}_{n}")
    return stems


def cmd_explain(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from caap.core.contexts import make_context
    from caap.core.engine import layers_from_spec
    from caap.data.images import load_image
    from caap.io import save_figure, save_json, save_npy
    from caap.viz import close, explanation_figure

    if args.top_k < 1:
        raise CaapError(f"--top-k {args.top_k}: expected a positive number of classes")
    device = _device(args.device)
    paths = [Path(p) for p in args.images]
    pictures = [load_image(p) for p in paths]  # every image checked before any work
    model, adapter, cfg, transform, norm = _load_model(args)
    num_classes = int(getattr(model, "num_classes", 0) or adapter.forward(torch.zeros(1, *cfg["input_size"])).shape[1])
    target = _parse_target(args.target, num_classes)
    if args.top_k > num_classes:
        raise CaapError(f"--top-k {args.top_k} exceeds the model's {num_classes} classes")
    context_path = Path(args.context)
    if context_path.suffix and context_path.exists():
        context = transform(load_image(context_path))  # [3, H, W]
    else:
        context = make_context(args.context)
    layers = layers_from_spec(args.layers) if args.layers else None
    options = {"layers": layers, "context": context if args.context != "mean" else None,
               "score": args.score if args.score != "logit" else None, "batch_size": args.batch_size,
               "device": device, "dtype": args.dtype if args.dtype != "float32" else None, "normalization": norm}
    explainer = make_explainer(args.method, model, options)
    names = _class_names(model, num_classes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "model": args.model, "weights": str(args.weights) if args.weights else "pretrained",
        **(explainer.settings() if hasattr(explainer, "settings") else {}), "method": args.method,
        "context": args.context, "target": args.target, "top_k": args.top_k,
        "device": str(device), "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "versions": {"caap": _version(), "torch": torch.__version__, "python": platform.python_version()},
    }
    results = {"settings": settings, "images": [], "total_seconds": 0.0}
    start = time.perf_counter()
    stems = _unique_stems(paths)
    bar = tqdm(list(zip(paths, pictures, stems, strict=True)), desc="explain", unit="img", disable=len(paths) < 2)
    for path, picture, stem in bar:
        x = transform(picture)[None]  # [1, 3, H, W]
        with torch.inference_mode():
            probs = model(x.to(next(model.parameters()).device)).float().softmax(-1)[0].cpu()
        classes = [target] if target is not None else probs.topk(args.top_k).indices.tolist()
        t0 = time.perf_counter()
        maps = class_maps(explainer, x, classes)  # [K, h, w]
        seconds = time.perf_counter() - t0
        titles = [f"{names[c]} (class {c}), p={probs[c]:.3f}" for c in classes]
        image = norm.denormalize(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()  # [H, W, 3]
        what = f"CAAP, layers {explainer.layers}" if args.method == "caap" else args.method
        fig = explanation_figure(image, list(maps), titles, suptitle=f"{path.name} — {what}",
                                 unit=f"Δ {args.score}" if args.method == "caap" else "attribution")
        save_figure(out / f"{stem}.png", fig, dpi=110)
        close(fig)
        save_npy(out / f"{stem}.npy", (maps if len(classes) > 1 else maps[0]).numpy())
        results["images"].append({
            "image": str(path), "png": f"{stem}.png", "npy": f"{stem}.npy",
            "targets": classes, "class_names": [names[c] for c in classes],
            "probability": [float(probs[c]) for c in classes],
            "map_max": [float(m.max()) for m in maps], "map_min": [float(m.min()) for m in maps],
            "seconds": seconds, "grid": list(maps.shape[1:]),
        })
        results["total_seconds"] = time.perf_counter() - start
        save_json(out / "results.json", results)  # after every image: an interrupted run keeps what it did
    print(f"explained {len(paths)} image(s) in {results['total_seconds']:.1f} s -> {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:

    from caap import methods
    from caap.data.images import load_image
    from caap.io import save_figure, save_json
    from caap.viz import close, grid_figure

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not names:
        raise CaapError("--methods is empty; expected e.g. caap,rollout,gradcam")
    unknown = [m for m in names if m not in methods.available()]
    if unknown:
        raise CaapError(f"unknown method {unknown[0]!r}; expected one of {methods.available()}")
    picture = load_image(args.image)
    model, _, _, transform, norm = _load_model(args)
    x = transform(picture)[None]
    with torch.inference_mode():
        probs = model(x).float().softmax(-1)[0]
    target = _parse_target(args.target, probs.shape[0])
    target = int(probs.argmax()) if target is None else target
    image = norm.denormalize(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    maps, titles, timing = [], [], {}
    for name in names:
        explainer = make_explainer(name, model, {"normalization": norm})
        start = time.perf_counter()
        maps.append(explainer.explain(x, target=target).scores[0])
        timing[name] = time.perf_counter() - start
        titles.append(f"{name} ({timing[name]:.1f} s)")
    class_name = _class_names(model, probs.shape[0])[target]
    fig = grid_figure([image] * len(maps), maps, titles, columns=min(4, len(maps)),
                      suptitle=f"{Path(args.image).name}: {class_name} (class {target}), p={probs[target]:.3f}")
    out = Path(args.out)
    save_figure(out / "compare.png", fig, dpi=110)
    close(fig)
    save_json(out / "compare.json", {"image": args.image, "model": args.model, "target": target,
                                     "methods": names, "seconds": timing})
    print(f"compared {len(names)} methods -> {out / 'compare.png'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from caap.bench.runner import BenchConfig, run

    _check_subset(args)
    config = BenchConfig(model=args.model, weights=args.weights, data=args.data, masks=args.masks, limit=args.limit,
                         every=args.every,
                         methods=[m for m in args.methods.split(",") if m],
                         metrics=[m for m in args.metrics.split(",") if m])
    table = run(config, args.out, rescore=args.rescore)
    if table is not None:
        print((Path(args.out) / "table.md").read_text(), end="")
    return 0


def _check_subset(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise CaapError(f"--limit {args.limit}: expected a positive number of images")
    if args.every < 1:
        raise CaapError(f"--every {args.every}: expected a positive step")


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CaapError(f"{flag} {text!r}: expected comma-separated integers") from None
    if not values or min(values) < 0:
        raise CaapError(f"{flag} {text!r}: expected non-negative integers")
    return values


def cmd_sweep(args: argparse.Namespace) -> int:
    from caap.bench.sweep import SweepConfig, sweep
    from caap.core.contexts import make_context
    from caap.core.scores import make_score

    contexts = [c for c in args.contexts.split(",") if c]
    scores = [c for c in args.scores.split(",") if c]
    for c in contexts:
        make_context(c)
    for s in scores:
        make_score(s)
    widths = _ints(args.widths, "--widths")
    if 0 in widths:
        raise CaapError(f"--widths {args.widths!r}: a band has at least one block")
    _check_subset(args)
    config = SweepConfig(model=args.model, weights=args.weights, data=args.data, masks=args.masks, limit=args.limit,
                         every=args.every,
                         starts=_ints(args.starts, "--starts"), widths=widths, contexts=contexts, scores=scores,
                         metrics=[m for m in args.metrics.split(",") if m])
    summary = sweep(config, args.out)
    for s in summary["settings"]:
        means = "  ".join(f"{k} {v:.4f}" for k, v in s["means"].items())
        print(f"layers {s['start']}:{s['start'] + s['width']}  {s['context']:8s} {s['score']:8s} {means}")
    return 0


DEMO_SEED = 2_000_003  # demo images come from a seed that training and testing never use


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from caap import CAAP
    from caap.data.demo import load_demo_model, model_card, normalize_uint8
    from caap.data.synthetic import SyntheticConfig, generate_batch
    from caap.io import save_figure, save_json, save_npy
    from caap.metrics import pointing_game_hits
    from caap.viz import close, explanation_figure, grid_figure

    if not 1 <= args.images <= 1000:
        raise CaapError(f"--images {args.images}: expected 1..1000")
    model = load_demo_model(args.variant)
    config = SyntheticConfig(variant=args.variant, seed=DEMO_SEED + args.seed)
    batch = generate_batch(config, 0, args.images, balanced=True)
    x = normalize_uint8(batch["images"])  # [B, 3, H, W]
    explainer = CAAP(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = config.classes
    start = time.perf_counter()
    scores, targets, records = [], [], []
    for i in tqdm(range(args.images), desc="demo", unit="img", disable=args.images < 2):
        att = explainer.explain(x[i : i + 1])
        scores.append(att.scores[0])
        targets.append(int(att.target[0]))
    maps = torch.stack(scores)  # [B, gh, gw]
    hits = pointing_game_hits(maps, batch["masks"])
    images = [im.permute(1, 2, 0).numpy() for im in batch["images"]]  # uint8 [H, W, 3]
    masks = [m.numpy() for m in batch["masks"]]
    titles = []
    for i in range(args.images):
        label, pred = int(batch["labels"][i]), targets[i]
        title = f"{names[pred]}{'' if pred == label else f' (true: {names[label]})'} {'hit' if hits[i] else 'miss'}"
        titles.append(title)
        fig = explanation_figure(images[i] / 255.0, [maps[i]], [title], outlines=[masks[i]],
                                 suptitle=f"demo {args.variant} #{i}: CAAP, layers {explainer.layers}",
                                 unit="Δ logit")
        save_figure(out / f"demo_{i:03d}.png", fig, dpi=100)
        close(fig)
        save_npy(out / f"demo_{i:03d}.npy", maps[i].numpy())
        records.append({"index": i, "label": label, "label_name": names[label], "prediction": pred,
                        "prediction_name": names[pred], "pointing_hit": bool(hits[i]), "png": f"demo_{i:03d}.png"})
    fig = grid_figure([im / 255.0 for im in images], list(maps), titles, outlines=masks,
                      suptitle=f"CAAP on the {args.variant} controlled-evidence benchmark (green: ground truth)")
    save_figure(out / "grid.png", fig, dpi=100)
    close(fig)
    share = float(hits.float().mean())
    accuracy = float((torch.tensor(targets) == batch["labels"]).float().mean())
    save_json(out / "results.json", {
        "variant": args.variant, "images": args.images, "seed": config.seed, "settings": explainer.settings(),
        "pointing_game": share, "accuracy": accuracy, "seconds": time.perf_counter() - start,
        "model_card": {k: model_card(args.variant).get(k) for k in ("test_accuracy", "occlusion_check")},
        "records": records,
    })
    print(f"caap demo ({args.variant}): {args.images} images, model accuracy {accuracy:.0%}, "
          f"pointing game {int(hits.sum())}/{args.images} = {share:.0%} (top patch on the class object)")
    print(f"wrote {out}/grid.png, demo_*.png, demo_*.npy, results.json")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
