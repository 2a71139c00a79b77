"""``caap explain`` and ``caap compare`` as library functions: models by name, maps written to a folder.

Everything here writes atomically: ``results.json`` after every image, so an interrupted run keeps what it did.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from caap.adapters import Adapter, adapt, classifier, create_model, model_data_config
from caap.bench.options import MethodSpec, Placement
from caap.core.contexts import Normalization
from caap.data.images import load_image
from caap.errors import CaapError, OptionError
from caap.io import save_figure, save_json, save_npy
from caap.methods import METHODS, Explainer
from caap.version import __version__
from caap.viz import explanation_figure, grid_figure
from caap.viz.explorer import PageMethod, page_image, page_maps, write_page


@dataclass
class LoadedModel:
    """A model by name with what the commands need around it: its adapter, data config, preprocessing."""

    name: str
    weights: str | None
    model: nn.Module
    adapter: Adapter
    data_config: dict
    transform: Callable[[Image.Image], torch.Tensor]

    @property
    def normalization(self) -> Normalization:
        return Normalization(tuple(self.data_config["mean"]), tuple(self.data_config["std"]))

    @property
    def class_names(self) -> list[str]:
        n = self.num_classes
        names = self.adapter.card.class_names
        return list(names) if names and len(names) == n else [f"class {i}" for i in range(n)]

    @property
    def num_classes(self) -> int:
        n = self.adapter.num_classes
        if n:
            return n
        with torch.inference_mode():
            return int(self.adapter.forward(torch.zeros(1, *self.data_config["input_size"])).shape[1])

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The model's class probabilities ``[B, C]`` for inputs ``x``: a softmax, or one sigmoid per class for a
        SigLIP-style zero-shot classifier (``kind == "sigmoid"``)."""
        logits = self.adapter.forward(x.to(next(self.model.parameters()).device)).float()
        return logits.sigmoid() if getattr(self.model, "kind", "softmax") == "sigmoid" else logits.softmax(-1)

    def placement(self, device: str | None = None, dtype: str | None = None,
                  batch_size: int | None = None) -> Placement:
        """Where the methods run on this model, with its input normalisation (:class:`Placement`)."""
        return Placement(device, dtype, batch_size, self.normalization)

    def pixels(self, x: torch.Tensor):
        """A model input ``[1, 3, H, W]`` as an ``[H, W, 3]`` float image in [0, 1] for figures."""
        return self.normalization.denormalize(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()


def load_model(name: str, weights: str | None = None, methods: Sequence[str] = (), prompts: Sequence[str] | None = None,
               templates: Sequence[str] | None = None, img_size: int | tuple[int, int] | None = None) -> LoadedModel:
    """A model by name (:func:`caap.adapters.create_model`) with its own data config and transform; a model
    that is no ViT is refused before its weights are read when one of ``methods`` needs a ViT. ``prompts``: an
    image-text model becomes the zero-shot classifier of these prompts (:func:`caap.adapters.zero_shot`; with
    ``templates``, they are class names); ``img_size``: a timm model built for another input size.
    """
    from timm.data import create_transform

    model = create_model(name, weights, needs_vit=vit_method(methods), img_size=img_size)
    model = classifier(model, name, prompts, templates)
    cfg = model_data_config(model)
    adapter = adapt(model, Normalization(tuple(cfg["mean"]), tuple(cfg["std"])))
    return LoadedModel(name, weights, model, adapter, cfg,
                       create_transform(**{k: v for k, v in cfg.items() if k != "source"}))


def vit_method(specs: Sequence[str]) -> str | None:
    """The first of the method specs that needs a ViT's tokens (not model-agnostic), or None."""
    return next((s.split(":")[0] for s in specs if not METHODS.get(s).model_agnostic), None)


def class_maps(explainer: Explainer, x: torch.Tensor, classes: list[int], progress: bool = True) -> torch.Tensor:
    """Maps ``[K, h, w]`` of one image for several classes: one call where the method takes a ``classes`` call
    option (CAAP: exact maps of every class at no extra cost, fast ones at one backward pass per class)."""
    if "classes" in explainer.call_options and len(classes) > 1:
        return explainer.explain(x, target=classes[0], classes=classes, progress=progress).class_scores[0]
    return torch.stack([explainer.explain(x, target=c, progress=progress).scores[0] for c in classes])


def output_stems(paths: Sequence[Path], out: Path) -> list[str]:
    """Output names for the inputs, stable (they depend on the inputs and their order only) and unique:
    ``<stem>.caap`` (a caap infix, so that ``<stem>.caap.png`` never takes the name of a user's own image),
    ``<stem>-2.caap``… where stems repeat; never the path of an input."""
    inputs = {p.resolve() for p in paths}
    taken: set[str] = set()
    stems = []
    for p in paths:
        n, name = 1, f"{p.stem}.caap"
        while name in taken or any((out / f"{name}{ext}").resolve() in inputs for ext in (".png", ".npy")):
            n += 1
            name = f"{p.stem}-{n}.caap"
        taken.add(name)
        stems.append(name)
    return stems


FIGURE_FORMATS = ("png", "svg", "pdf")


def check_figure_options(fmt: str, display: str) -> None:
    if fmt not in FIGURE_FORMATS:
        raise CaapError(f"figure format {fmt!r}: expected one of {', '.join(FIGURE_FORMATS)}")
    if display not in ("bilinear", "nearest"):
        raise CaapError(f"display {display!r}: expected 'bilinear' or 'nearest' (patch-exact)")


def explain_files(paths: Sequence[str | Path], loaded: LoadedModel, explainer: Explainer, out: str | Path, *,
                  target: int | None = None, top_k: int = 1, settings: dict | None = None,
                  unit: str | None = None, progress: bool = True, fmt: str = "png",
                  display: str = "bilinear", html: bool = False) -> dict:
    """Explain image files: per image a figure (``fmt``: png, svg or pdf; the input, then the top-k classes'
    overlays on one shared scale with its colour bar), the raw maps (``.npy``: ``[h, w]``, or ``[K, h, w]`` for
    several classes) and ``results.json`` for the run. ``display="nearest"`` shows patch maps patch-exact;
    ``html``: also ``explore.html``, the run's maps in one self-contained page (:mod:`caap.viz.explorer`);
    ``unit``: the colour bar's label (default: the method's own, :meth:`Explainer.unit`)."""
    check_figure_options(fmt, display)
    if top_k < 1:
        raise OptionError("top_k", f"{top_k}: expected a positive number of classes")
    unit = unit or explainer.unit()
    paths = [Path(p) for p in paths]
    pictures = [load_image(p) for p in paths]  # every image checked before any work
    names = loaded.class_names
    if top_k > len(names):
        raise OptionError("top_k", f"{top_k} exceeds the model's {len(names)} classes")
    if target is not None and not 0 <= target < len(names):
        raise OptionError("target", f"{target} is out of range; expected a class index in 0..{len(names) - 1}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"settings": {**explainer.settings(), **(settings or {}),
                            "versions": {"caap": __version__, "torch": torch.__version__,
                                         "python": platform.python_version()}},
               "images": [], "total_seconds": 0.0}
    start = time.perf_counter()
    pages: list = []
    rows = list(zip(paths, pictures, output_stems(paths, out), strict=True))
    for path, picture, stem in tqdm(rows, desc="explain", unit="img", disable=not progress or len(paths) < 2):
        x = loaded.transform(picture)[None]  # [1, 3, H, W]
        with torch.inference_mode():
            probs = loaded.probabilities(x)[0].cpu()
        classes = [target] if target is not None else probs.topk(top_k).indices.tolist()
        t0 = time.perf_counter()
        maps = class_maps(explainer, x, classes, progress and len(paths) < 2)  # [K, h, w]; one bar at a time
        seconds = time.perf_counter() - t0
        titles = [f"{names[c]} (class {c}), p={probs[c]:.3f}" for c in classes]
        what = explainer.describe()
        fig = explanation_figure(loaded.pixels(x), list(maps), titles, suptitle=f"{path.name} — {what}", unit=unit,
                                 signed=explainer.signed, mode=display)
        save_figure(out / f"{stem}.{fmt}", fig, dpi=110)
        save_npy(out / f"{stem}.npy", (maps if len(classes) > 1 else maps[0]).numpy())
        if html:
            shown = [(c, names[c], float(probs[c])) for c in classes]
            pages.append(page_image(path.name, loaded.pixels(x), shown,
                                    {explainer.name: PageMethod(page_maps(maps), explainer.signed)}))
        results["images"].append({
            "image": str(path), "figure": f"{stem}.{fmt}", **({"png": f"{stem}.png"} if fmt == "png" else {}),
            "npy": f"{stem}.npy",
            "targets": classes, "class_names": [names[c] for c in classes],
            "probability": [float(probs[c]) for c in classes],
            "map_max": [float(m.max()) for m in maps], "map_min": [float(m.min()) for m in maps],
            "seconds": seconds, "grid": list(maps.shape[1:]),
        })
        results["total_seconds"] = time.perf_counter() - start
        save_json(out / "results.json", results)
    if html:
        write_page(pages, out, f"caap explain — {loaded.name}, {explainer.name}")
    return results


def compare(paths: str | Path | Sequence[str | Path], loaded: LoadedModel, specs: Sequence[str], out: str | Path,
            target: int | None = None, *, fmt: str = "png", display: str = "bilinear") -> dict:
    """Images (one or several) × methods (``NAME[:KEY=VALUE…]`` specs) in one grid, a row per image, each map with
    its colour bar: ``compare.<fmt>`` and ``compare.json`` (per image its target and seconds per method; for the
    first image also at the top level). ``target``: one class for every image, else each image's top-1 class."""
    check_figure_options(fmt, display)
    if not specs:
        raise OptionError("methods", "is empty; expected e.g. caap,rollout,gradcam")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    explainers = {spec: MethodSpec.parse(spec).build(loaded.model, loaded.placement()) for spec in specs}
    images, maps, titles, rows = [], [], [], []
    for path in paths:
        x = loaded.transform(load_image(path))[None]
        with torch.inference_mode():
            probs = loaded.probabilities(x)[0]
        if target is not None and not 0 <= target < probs.shape[0]:
            raise OptionError("target", f"{target} is out of range; expected a class index in 0..{probs.shape[0] - 1}")
        chosen = int(probs.argmax()) if target is None else target
        timing = {}
        for k, (spec, explainer) in enumerate(explainers.items()):
            start = time.perf_counter()
            maps.append(explainer.explain(x, target=chosen).scores[0])
            timing[spec] = time.perf_counter() - start
            head = f"{Path(path).name}: {loaded.class_names[chosen]} (p={probs[chosen]:.2f}) · " if k == 0 else ""
            titles.append(head + spec)
            images.append(loaded.pixels(x))
        rows.append({"image": str(path), "target": chosen, "class": loaded.class_names[chosen], "seconds": timing})
    one = len(paths) == 1
    suptitle = (f"{Path(paths[0]).name}: {rows[0]['class']} (class {rows[0]['target']})" if one
                else f"{loaded.name}: {len(paths)} images × {len(specs)} methods")
    fig = grid_figure(images, maps, titles, columns=min(5, len(specs)) if one else len(specs), mode=display,
                      signed=[e.signed for e in explainers.values()] * len(paths), suptitle=suptitle)
    out = Path(out)
    save_figure(out / f"compare.{fmt}", fig, dpi=110)
    summary = {"image": str(paths[0]), "model": loaded.name, "target": rows[0]["target"], "methods": list(specs),
               "seconds": rows[0]["seconds"], "images": rows, "figure": f"compare.{fmt}"}
    save_json(out / "compare.json", summary)
    return summary
