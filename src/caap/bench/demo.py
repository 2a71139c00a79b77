"""``caap demo``: the embedded model explains generated controlled-evidence images, offline."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from caap.adapters.demo import load_demo_model, model_card, normalize_uint8
from caap.data.synthetic import SyntheticConfig, generate_batch
from caap.errors import OptionError
from caap.io import save_figure, save_json, save_npy
from caap.methods import CAAP
from caap.metrics import pointing_game_hits
from caap.viz import explanation_figure, grid_figure

DEMO_SEED = 2_000_003  # demo images come from a seed that training and testing never use


def run_demo(variant: str = "simple", images: int = 8, seed: int = 0, out: str | Path = "caap-demo",
             progress: bool = True) -> dict:
    """Explain ``images`` generated images of ``variant`` with CAAP on the embedded model; writes one figure
    per image, ``grid.png``, the raw maps and ``results.json`` (accuracy, pointing game, records)."""
    if not 1 <= images <= 1000:
        raise OptionError("images", f"{images}: expected 1..1000")
    model = load_demo_model(variant)
    config = SyntheticConfig(variant=variant, seed=DEMO_SEED + seed)
    batch = generate_batch(config, 0, images, balanced=True)
    x = normalize_uint8(batch["images"])  # [B, 3, H, W]
    explainer = CAAP(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = config.classes
    start = time.perf_counter()
    scores, targets, records = [], [], []
    for i in tqdm(range(images), desc="demo", unit="img", disable=not progress or images < 2):
        att = explainer.explain(x[i : i + 1], progress=False)
        scores.append(att.scores[0])
        targets.append(int(att.target[0]))
    maps = torch.stack(scores)  # [B, gh, gw]
    hits = pointing_game_hits(maps, batch["masks"])
    pictures = [im.permute(1, 2, 0).numpy() for im in batch["images"]]  # uint8 [H, W, 3]
    masks = [m.numpy() for m in batch["masks"]]
    titles = []
    for i in range(images):
        label, pred = int(batch["labels"][i]), targets[i]
        title = f"{names[pred]}{'' if pred == label else f' (true: {names[label]})'} {'hit' if hits[i] else 'miss'}"
        titles.append(title)
        fig = explanation_figure(pictures[i] / 255.0, [maps[i]], [title], outlines=[masks[i]],
                                 suptitle=f"demo {variant} #{i}: CAAP, layers {explainer.layers}", unit="Δ logit")
        save_figure(out / f"demo_{i:03d}.png", fig, dpi=100)
        save_npy(out / f"demo_{i:03d}.npy", maps[i].numpy())
        records.append({"index": i, "label": label, "label_name": names[label], "prediction": pred,
                        "prediction_name": names[pred], "pointing_hit": bool(hits[i]), "png": f"demo_{i:03d}.png"})
    fig = grid_figure([im / 255.0 for im in pictures], list(maps), titles, outlines=masks,
                      suptitle=f"CAAP on the {variant} controlled-evidence benchmark (green: ground truth)")
    save_figure(out / "grid.png", fig, dpi=100)
    results = {
        "variant": variant, "images": images, "seed": config.seed, "settings": explainer.settings(),
        "pointing_game": float(hits.float().mean()), "hits": int(hits.sum()),
        "accuracy": float((torch.tensor(targets) == batch["labels"]).float().mean()),
        "seconds": time.perf_counter() - start,
        "model_card": {k: model_card(variant).get(k) for k in ("test_accuracy", "occlusion_check")},
        "records": records,
    }
    save_json(out / "results.json", results)
    return results
