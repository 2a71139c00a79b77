"""Which caap methods run on which vision transformer: one row per model class of timm and Hugging Face, generated
by building each from a random-init config and trying the methods, so the table cannot go stale.

    python benchmarks/coverage.py --out docs/COVERAGE.md [--json benchmarks/results/coverage.json]
        [--timm-modules beit,deit,...] [--hf ViTForImageClassification,...] [--tiny]

timm: every registered model name is built on the meta device (no memory) to learn its class; a class is in the
table when its modules include self-attention (a class name ending in ``Attention`` or ``Attn``); the smallest
name of each class is then built for real (random init) and each method is tried on one image of its input size:
exact CAAP (one patched block, the last), fast CAAP, the attention methods (rollout), the linear-rule methods
(AttnLRP) and a model-agnostic one (saliency). Hugging Face: every ``*ForImageClassification`` class with a
vision-transformer config, plus the CLIP / SigLIP models and towers, built from their default configs. A cell is
``yes``, or the one-line reason caap gives. ``--tiny`` shrinks the models (depth 2, width 64, 64 px where the class
takes those options): the test runs it on a few classes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from caap import methods
from caap.errors import CaapError
from caap.io import atomic_write_bytes

TRIES = {"exact CAAP": "caap", "fast CAAP": "caap_fast", "attention (rollout)": "rollout",
         "LRP rules (AttnLRP)": "attnlrp", "model-agnostic (saliency)": "saliency"}
TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 64}
HF_TOWERS = ("CLIPVisionModel", "CLIPVisionModelWithProjection", "CLIPModel", "SiglipVisionModel", "SiglipModel")


def has_attention(model: torch.nn.Module) -> bool:
    return any(type(m).__name__.endswith(("Attention", "Attn")) for m in model.modules())


def timm_classes(modules: list[str] | None) -> dict[str, str]:
    """``{class name: its smallest registered model name}`` for timm's classes with self-attention."""
    import timm

    found: dict[str, tuple[int, str]] = {}
    names = [n for m in modules for n in timm.list_models(module=m)] if modules else timm.list_models()
    for name in names:
        try:
            with torch.device("meta"), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                model = timm.create_model(name, pretrained=False)
        except Exception:  # a name that needs arguments or extra packages: not built here
            continue
        if not has_attention(model):
            continue
        size = sum(p.numel() for p in model.parameters())
        cls = f"timm {type(model).__module__.removeprefix('timm.models.')}.{type(model).__name__}"
        if cls not in found or size < found[cls][0]:
            found[cls] = (size, name)
    return {cls: name for cls, (_, name) in sorted(found.items())}


def build_timm(name: str, tiny: bool):
    import timm

    torch.manual_seed(0)
    if tiny:
        for drop in ([], ["img_size"], ["img_size", "num_heads"]):
            try:
                return timm.create_model(name, pretrained=False, **{k: v for k, v in TINY.items() if k not in drop})
            except Exception:
                continue
    return timm.create_model(name, pretrained=False)


def hf_classes(only: list[str] | None) -> list[str]:
    import transformers

    mapping = transformers.models.auto.modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    values = [n for v in mapping.values() for n in ((v,) if isinstance(v, str) else v)]
    names = sorted(set(values) | set(HF_TOWERS))
    return [n for n in names if only is None or n in only]


def build_hf(name: str, tiny: bool):
    import transformers

    cls = getattr(transformers, name)
    config = cls.config_class()
    if tiny:
        for key, value in (("num_hidden_layers", 2), ("hidden_size", 64), ("num_attention_heads", 2),
                           ("intermediate_size", 128), ("image_size", 64)):
            for holder in (config, getattr(config, "vision_config", None)):
                if holder is not None and hasattr(holder, key) and isinstance(getattr(holder, key), int):
                    setattr(holder, key, value)
    torch.manual_seed(0)
    return cls(config).eval()


def input_size(model: torch.nn.Module, adapter) -> tuple[int, int]:
    """The input size the model was built for: the adapter's, else the config's ``image_size`` (Hugging Face, its
    vision config too), else timm's ``pretrained_cfg``, else 224 px."""
    if adapter.card.input_size:
        return tuple(adapter.card.input_size)
    config = getattr(model, "config", None)
    for holder in (config, getattr(config, "vision_config", None)):
        size = getattr(holder, "image_size", None)
        if isinstance(size, int):
            return (size, size)
        if isinstance(size, (list, tuple)) and len(size) == 2:
            return (int(size[0]), int(size[1]))
    default = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    return (int(default[-2]), int(default[-1])) if default else (224, 224)


def try_methods(model: torch.nn.Module) -> dict[str, str]:
    """``{column: "yes" | reason}`` for one model, one image of its input size."""
    from caap.adapters import adapt

    try:
        adapter = adapt(model)
        size = input_size(model, adapter)
    except CaapError as exc:
        return {col: str(exc).splitlines()[0] for col in TRIES}
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    out = {}
    for column, spec in TRIES.items():
        options = {"layers": [adapter.num_blocks - 1]} if spec in ("caap", "caap_fast") and adapter.tokens else {}
        try:
            att = methods.build(spec, model, **options).explain(x, progress=False)
            out[column] = "yes" if torch.isfinite(att.scores).all() else "non-finite map"
        except CaapError as exc:
            out[column] = str(exc).splitlines()[0]
        except Exception as exc:  # a crash is a finding, not a reason to stop the table
            out[column] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
    return out


def short(reason: str) -> str:
    """The gist of caap's one-line refusal: what is missing and why."""
    if "merges patches" in reason:
        return reason[reason.rindex("(") + 1 :].rstrip(")")
    if "has no " in reason:
        reason = "no " + reason.split("has no ", 1)[1]
    return reason if len(reason) <= 140 else reason[:137] + "…"


def table(rows: dict[str, dict]) -> str:
    head = ["model class", "built as", *TRIES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cls, row in rows.items():
        cells = [row["name"], *(("yes" if row[c] == "yes" else short(row[c])) for c in TRIES)]
        lines.append("| " + " | ".join([cls, *(c.replace("|", "/") for c in cells)]) + " |")
    totals = {c: sum(r[c] == "yes" for r in rows.values()) for c in TRIES}
    lines += ["", f"{len(rows)} classes; " + "; ".join(f"{c}: {n}" for c, n in totals.items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--timm-modules", help="only these timm modules (comma-separated)")
    parser.add_argument("--hf", help="only these Hugging Face classes (comma-separated); 'none' for none")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows: dict[str, dict] = {}
    start = time.perf_counter()
    modules = args.timm_modules.split(",") if args.timm_modules else None
    for cls, name in timm_classes(modules).items():
        try:
            model = build_timm(name, args.tiny).eval()
        except Exception as exc:
            rows[cls] = {"name": name, **{c: f"not built: {type(exc).__name__}" for c in TRIES}}
            continue
        rows[cls] = {"name": name, **try_methods(model)}
        print(f"{cls}: {rows[cls]}", file=sys.stderr, flush=True)
    only = None if args.hf is None else ([] if args.hf == "none" else args.hf.split(","))
    for name in hf_classes(only):
        try:
            model = build_hf(name, args.tiny)
        except Exception as exc:
            rows[f"transformers {name}"] = {"name": "default config", **{c: f"not built: {type(exc).__name__}"
                                                                          for c in TRIES}}
            continue
        rows[f"transformers {name}"] = {"name": "default config" + (" (tiny)" if args.tiny else ""),
                                        **try_methods(model)}
        print(f"{name}: {rows[f'transformers {name}']}", file=sys.stderr, flush=True)
    text = ("# Coverage: which caap methods run on which vision transformer\n\n"
            f"Generated by `python benchmarks/coverage.py {' '.join(sys.argv[1:])}` (random-init models"
            f"{', shrunk to depth 2 and width 64 where the class takes those options' if args.tiny else ''}, one image "
            f"each of the size the model was built for, {time.perf_counter() - start:.0f} s). A cell is `yes`, the "
            "one-line reason caap gives, or `error:` where the model itself failed on that input.\n\n"
            + table(rows))
    atomic_write_bytes(args.out, text.encode())
    if args.json:
        atomic_write_bytes(args.json, json.dumps(rows, indent=1).encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
