"""Golden maps: every registered method's map on tiny models of every architecture and on real DeiT-Tiny.

    python benchmarks/golden.py record OUT.pt        # before a change
    python benchmarks/golden.py check OUT.pt         # after it: every map must be bitwise identical

A refactor that claims "no change to any number" runs this before and after. It uses only the public API
(``caap.methods.available``, ``caap.methods.build``, ``Explainer.explain``), so it runs on both sides.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CAAP_DATA_DIR", ROOT.parent / "shared" / "data"))  # real data, when it is there
DEIT_TINY, DEV_IMAGES = DATA / "deit_tiny_patch16_224.safetensors", DATA / "imagenet-dev"

# Slow defaults shortened so that the check runs in minutes; the code paths are the same.
FAST = {"rise": "rise:masks=64", "tis": "tis:masks=64", "token_rise": "token_rise:masks=64",
        "integrated_gradients": "integrated_gradients:steps=8", "smoothgrad": "smoothgrad:samples=4"}
EXTRA = ["caap:context=blur:score=prob", "caap:layers=1:3:context=noise", "caap:context=black:score=logprob",
         "caap:refine=0.25", "caap:refine=0.5:coarse=3", "caap_fast:context=blur:score=prob",
         "caap_adaptive:refine=0.2", "caap_fast:layers=1:3"]
ALL_CLASSES = ("caap", "caap_fast", "caap_adaptive", "caap:refine=0.25")  # also explained with all_classes=True
GROUPED = ("caap", "caap_fast")  # also explained with a 2x2 superpatch group map


def specs() -> list[str]:
    from caap import methods

    return [FAST.get(name, name) for name in methods.available()] + EXTRA


def run_all(model, images: torch.Tensor, prefix: str, out: dict) -> None:
    from caap import methods
    from caap.errors import CaapError

    for spec in specs():
        key = f"{prefix}/{spec}"
        try:
            att = methods.build(spec, model).explain(images)
        except CaapError as exc:  # a method that does not support the architecture
            out[key] = f"{type(exc).__name__}"
            continue
        out[key] = {"scores": att.scores.clone(), "target": att.target.clone()}
        if spec in ALL_CLASSES:
            full = methods.build(spec, model).explain(images, all_classes=True)
            out[key + "/all_classes"] = {"scores": full.class_scores.clone(), "target": full.target.clone()}
        if spec in GROUPED:
            from caap.core.groups import superpatch_groups

            groups = superpatch_groups(tuple(att.scores.shape[-2:]), 2)
            grouped = methods.build(spec, model).explain(images, groups=groups)
            out[key + "/groups"] = {"scores": grouped.scores.clone(), "target": grouped.target.clone()}


def collect() -> dict:
    from caap.adapters import tiny as archs

    torch.set_num_threads(2)
    out: dict = {}
    for name in archs.ARCHS:
        model = archs.build(name)
        x = torch.randn(2, 3, archs.IMG, archs.IMG, generator=torch.Generator().manual_seed(1))
        run_all(archs.explainable(name, model), x, name, out)
        print(f"{name}: done", flush=True)
    if DEIT_TINY.is_file():
        from timm.data import create_transform, resolve_model_data_config

        from caap.data.images import load_image

        try:
            from caap.adapters import create_model
        except ImportError:  # before the one-way layout (caap.models)
            from caap.models import create_model

        model = create_model("deit_tiny_patch16_224", DEIT_TINY)
        transform = create_transform(**resolve_model_data_config(model))
        files = sorted(DEV_IMAGES.glob("*"))[:3]
        x = torch.stack([transform(load_image(f)) for f in files])
        run_all(model, x, "deit_tiny", out)
        print("deit_tiny: done", flush=True)
    return out


def compare(before: dict, after: dict) -> list[str]:
    problems = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a is None or b is None:
            problems.append(f"{key}: only {'after' if a is None else 'before'}")
        elif isinstance(a, str) or isinstance(b, str):
            if a != b:
                problems.append(f"{key}: {a!r} -> {b!r}")
        else:
            for part in ("scores", "target"):
                if not torch.equal(a[part], b[part]) and not (
                        a[part].shape == b[part].shape and torch.equal(a[part].isnan(), b[part].isnan())
                        and torch.equal(a[part].nan_to_num(), b[part].nan_to_num())):
                    diff = (a[part].float() - b[part].float()).abs().nan_to_num().max().item() \
                        if a[part].shape == b[part].shape else "shape"
                    problems.append(f"{key}/{part}: differs (max |diff| {diff})")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "check"):
        print(__doc__)
        return 2
    path = Path(argv[1])
    result = collect()
    if argv[0] == "record":
        torch.save(result, path)
        print(f"recorded {len(result)} entries -> {path}")
        return 0
    problems = compare(torch.load(path), result)
    for p in problems:
        print(p)
    print(f"{len(result)} entries, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
