"""TIS reference maps from the authors' own code, for tests/test_tis.py (issue 23).

    pip install fast-pytorch-kmeans==0.1.6        # the authors' pinned k-means (not a caap dependency)
    python benchmarks/tis_reference.py --tis-repo CHECKOUT [--out benchmarks/results/tis_reference.npz]

``CHECKOUT``: a checkout of github.com/aenglebert/Transformer_Input_Sampling (the maps were made at commit
e66c0f8dbdd33f23756ee1c7d81304860e2a30bf); its ``tis`` package is imported from there, nothing of it is copied.
On the real DeiT-Tiny and the 8 reference inputs of ``../shared/reference/deit_tiny_dev8`` (targets: the true
labels), with the authors' defaults (``n_masks=1024, batch_size=128, tokens_ratio=0.5, normalise=True``) and
numpy's global generator seeded with ``--seed`` before each image, it writes

- ``maps`` ``[8, 14, 14]`` float32: the authors' maps;
- ``masks`` ``[8, 1024, 196]`` bool (packed): each image's token masks, recorded from the authors' own
  ``generate_binary_masks``;
- ``targets``, ``seed``, ``seconds`` per image and the versions used,

and prints how caap's ``tis`` (same seed) agrees: the largest map difference, the Spearman of the maps, and the
share of masks with the same token set.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr

from caap import methods
from caap.io import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CAAP_DATA_DIR", ROOT.parent / "shared" / "data"))
REFERENCE = Path(os.environ.get("CAAP_REFERENCE_DIR", ROOT.parent / "shared" / "reference" / "deit_tiny_dev8"))
TARGETS = [0, 125, 250, 375, 500, 625, 750, 875]  # the reference README's true labels


def deit_tiny() -> torch.nn.Module:
    model = timm.create_model("deit_tiny_patch16_224", num_classes=1000)
    model.load_state_dict(load_file(DATA / "deit_tiny_patch16_224.safetensors"), strict=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tis-repo", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tis_reference.npz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", default="0,1,2,3,4,5,6,7")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tis_repo))
    import fast_pytorch_kmeans
    from tis import TIS  # the authors' class

    torch.set_num_threads(1)
    model = deit_tiny()
    inputs = torch.from_numpy(np.load(REFERENCE / "inputs.npy"))
    chosen = [int(i) for i in args.images.split(",")]
    maps, masks, seconds = [], [], []
    for i in chosen:
        explainer = TIS(model, n_masks=1024, batch_size=128, tokens_ratio=0.5, normalise=True, verbose=False)
        recorded = []
        generate = explainer.generate_binary_masks

        def record(raw, generate=generate, recorded=recorded):  # keep the authors' masks as they make them
            out = generate(raw)
            recorded.append(torch.stack(out[0]).bool())
            return out

        explainer.generate_binary_masks = record
        np.random.seed(args.seed)
        start = time.perf_counter()
        saliency = explainer(inputs[i : i + 1], class_idx=TARGETS[i])
        seconds.append(time.perf_counter() - start)
        maps.append(saliency.float().numpy())
        masks.append(recorded[0].numpy())
        print(f"image {i}: {seconds[-1]:.1f} s", flush=True)
    maps, masks = np.stack(maps), np.stack(masks)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, maps=maps, masks=np.packbits(masks, axis=-1), mask_tokens=masks.shape[-1],
                        images=np.array(chosen), targets=np.array([TARGETS[i] for i in chosen]), seed=args.seed,
                        seconds=np.array(seconds), commit="e66c0f8dbdd33f23756ee1c7d81304860e2a30bf",
                        versions=f"torch {torch.__version__}, timm {timm.__version__}, "
                                 f"fast-pytorch-kmeans {getattr(fast_pytorch_kmeans, '__version__', '0.1.6')}")
    atomic_write_bytes(args.out, buffer.getvalue())
    ours = methods.get("tis")(model, seed=args.seed)
    for k, i in enumerate(chosen):
        att = ours.explain(inputs[i : i + 1], target=[TARGETS[i]], progress=False)
        kept = ours.token_masks(ours._forward(inputs[i : i + 1]).cache[1][0], 196)
        mine = torch.zeros(kept.shape[0], 196, dtype=torch.bool).scatter_(1, kept, True).numpy()
        print(f"image {i}: max |diff| {np.abs(att.scores[0].numpy() - maps[k]).max():.2e}, Spearman "
              f"{spearmanr(att.scores[0].numpy().ravel(), maps[k].ravel())[0]:.6f}, same masks "
              f"{(mine == masks[k]).all(1).mean():.4f}")


if __name__ == "__main__":
    main()
