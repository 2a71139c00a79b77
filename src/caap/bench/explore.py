"""``caap explore``: one self-contained HTML page for a run (:mod:`caap.viz.explorer`) — every image, every
method's maps for the top-k classes (CAAP's maps of several classes: one call), switchable, with hover values."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from caap.bench.explain import LoadedModel, class_maps
from caap.bench.options import MethodSpec
from caap.data.images import load_image
from caap.errors import OptionError
from caap.viz.explorer import PageMethod, page_image, page_maps, write_page


def explore(paths: Sequence[str | Path], loaded: LoadedModel, specs: Sequence[str], out: str | Path, *,
            top_k: int = 5, target: int | None = None, progress: bool = True) -> Path:
    """Explain ``paths`` with every method of ``specs`` for the top-``top_k`` classes (or ``target``) and write
    ``out/explore.html``; returns its path."""
    if not specs:
        raise OptionError("methods", "is empty; expected e.g. caap,gae,saliency")
    n_classes = len(loaded.class_names)
    if not 1 <= top_k <= n_classes:
        raise OptionError("top_k", f"{top_k}: expected 1..{n_classes}")
    explainers = {spec: MethodSpec.parse(spec).build(loaded.model, loaded.placement()) for spec in specs}
    pictures = [load_image(p) for p in paths]
    entries = []
    for path, picture in tqdm(list(zip(paths, pictures, strict=True)), desc="explore", unit="img",
                              disable=not progress or len(paths) < 2):
        x = loaded.transform(picture)[None]
        with torch.inference_mode():
            probs = loaded.probabilities(x)[0]
        classes = [target] if target is not None else probs.topk(top_k).indices.tolist()
        methods = {spec: PageMethod(page_maps(class_maps(e, x, classes, progress=False)), e.signed)
                   for spec, e in explainers.items()}
        shown = [(c, loaded.class_names[c], float(probs[c])) for c in classes]
        entries.append(page_image(Path(path).name, loaded.pixels(x), shown, methods))
    Path(out).mkdir(parents=True, exist_ok=True)
    return write_page(entries, out, f"caap explorer — {loaded.name}")
