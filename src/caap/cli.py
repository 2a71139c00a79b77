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
    p.add_argument("--model", required=True, help="timm model name, e.g. deit_tiny_patch16_224")
    p.add_argument("--weights", help="local .safetensors or .pth weights (default: pretrained from the hub)")
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
    return parser


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
    from timm.data import create_transform, resolve_model_data_config
    from tqdm.auto import tqdm

    from caap import CAAP
    from caap.adapters import adapt
    from caap.core.contexts import Normalization, make_context
    from caap.core.engine import layers_from_spec
    from caap.data.images import load_image
    from caap.io import save_figure, save_json, save_npy
    from caap.models import create_model
    from caap.viz import close, explanation_figure

    if args.top_k < 1:
        raise CaapError(f"--top-k {args.top_k}: expected a positive number of classes")
    device = _device(args.device)
    paths = [Path(p) for p in args.images]
    pictures = [load_image(p) for p in paths]  # every image checked before any work
    model = create_model(args.model, args.weights)
    adapter = adapt(model)
    cfg = resolve_model_data_config(model)
    transform = create_transform(**cfg)
    norm = Normalization(tuple(cfg["mean"]), tuple(cfg["std"]))
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
    explainer = CAAP(model, layers=layers, context=context, score=args.score, batch_size=args.batch_size,
                     device=device, dtype=args.dtype, normalization=norm)
    names = _class_names(model, num_classes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "model": args.model, "weights": str(args.weights) if args.weights else "pretrained",
        **explainer.settings(), "context": args.context, "target": args.target, "top_k": args.top_k,
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
        att = explainer.explain(x, target=classes[0], all_classes=len(classes) > 1)
        maps = att.class_scores[0, classes] if len(classes) > 1 else att.scores  # [K, gh, gw]
        titles = [f"{names[c]} (class {c}), p={probs[c]:.3f}" for c in classes]
        image = norm.denormalize(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()  # [H, W, 3]
        fig = explanation_figure(image, list(maps), titles, suptitle=f"{path.name} — CAAP, layers {explainer.layers}",
                                 unit=f"Δ {args.score}")
        save_figure(out / f"{stem}.png", fig, dpi=110)
        close(fig)
        save_npy(out / f"{stem}.npy", (maps if len(classes) > 1 else maps[0]).numpy())
        results["images"].append({
            "image": str(path), "png": f"{stem}.png", "npy": f"{stem}.npy",
            "targets": classes, "class_names": [names[c] for c in classes],
            "probability": [float(probs[c]) for c in classes],
            "context_score": float(att.meta["context_score"][0]), "source_score": float(att.meta["source_score"][0]),
            "map_max": [float(m.max()) for m in maps], "map_min": [float(m.min()) for m in maps],
            "seconds": att.meta["seconds"], "grid": list(att.grid),
        })
        results["total_seconds"] = time.perf_counter() - start
        save_json(out / "results.json", results)  # after every image: an interrupted run keeps what it did
    print(f"explained {len(paths)} image(s) in {results['total_seconds']:.1f} s -> {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
