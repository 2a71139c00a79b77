"""Which caap methods run on which vision transformer: one row per model class of timm and Hugging Face, generated
by building each from a random-init config and trying the methods, so the table cannot go stale
(``benchmarks/coverage.py`` writes docs/COVERAGE.md with it).

    rows = coverage(timm_modules=["deit"], hf=[], tiny=True)      # {model class: {"name", column: "yes" | reason}}
    table(rows)                                                   # Markdown

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

import contextlib
import io
import warnings

import torch

from caap import methods
from caap.errors import CaapError

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


def coverage(timm_modules: list[str] | None = None, hf: list[str] | None = None, tiny: bool = False,
             log=None) -> dict[str, dict]:
    """Every timm class with self-attention (of ``timm_modules``, default all) and Hugging Face class (of ``hf``,
    default all; ``[]`` none), built (``tiny``: shrunk) and tried: ``{class: {"name": built as, column: "yes" |
    reason}}``; ``log(line)`` hears of each row."""
    rows: dict[str, dict] = {}
    for cls, name in timm_classes(timm_modules).items():
        try:
            model = build_timm(name, tiny).eval()
        except Exception as exc:
            rows[cls] = {"name": name, **{c: f"not built: {type(exc).__name__}" for c in TRIES}}
            continue
        rows[cls] = {"name": name, **try_methods(model)}
        if log:
            log(f"{cls}: {rows[cls]}")
    for name in hf_classes(hf):
        key = f"transformers {name}"
        try:
            model = build_hf(name, tiny)
        except Exception as exc:
            rows[key] = {"name": "default config", **{c: f"not built: {type(exc).__name__}" for c in TRIES}}
            continue
        rows[key] = {"name": "default config" + (" (tiny)" if tiny else ""), **try_methods(model)}
        if log:
            log(f"{name}: {rows[key]}")
    return rows
