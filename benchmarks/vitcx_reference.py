"""ViT-CX reference maps from the authors' own code on the real DeiT-Tiny, for tests/test_vitcx.py (issue 34).

    pip install ttach opencv-python scikit-image scikit-learn      # the authors' imports (not caap dependencies)
    python benchmarks/vitcx_reference.py --vitcx-repo CHECKOUT [--out benchmarks/results/vitcx_reference.npz]

``CHECKOUT``: a checkout of github.com/vaynexie/CausalX-ViT (made at commit a120d99); its ``ViT_CX`` folder is
imported from there (``ViT_CX.ViT_CX``, their ``cam`` package, ``causal_score``), nothing copied. Their code is
written for CUDA (``.cuda()`` on every tensor and module) and for scikit-learn before 1.4 (``affinity=``); two shims
run it here, and nothing else of it changes: ``Tensor.cuda`` and ``Module.cuda`` return their object unchanged
(this machine has no GPU), and ``AgglomerativeClustering(affinity=...)`` is passed on as ``metric=``. With their
defaults (``target_layer=model.blocks[-1].norm1``, ``distance_threshold=0.1``, ``gpu_batch=50``), torch's global
generator seeded with ``--seed`` before each image (their noise is ``torch.randn`` on it), on the 8 reference inputs
of ``../shared/reference/deit_tiny_dev8`` with their true labels, it writes ``maps`` ``[8, 224, 224]``, the
targets, the seed and the seconds per image.
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

from caap.data.real import data_dir
from caap.io import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir(ROOT)
REFERENCE = Path(os.environ.get("CAAP_REFERENCE_DIR", ROOT.parent / "shared" / "reference" / "deit_tiny_dev8"))
TARGETS = [0, 125, 250, 375, 500, 625, 750, 875]  # the reference README's true labels
COMMIT = "a120d99"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vitcx-repo", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vitcx_reference.npz")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(args.vitcx_repo / "ViT_CX"))
    torch.Tensor.cuda = lambda self, *a, **k: self  # shim 1: no GPU here
    torch.nn.Module.cuda = lambda self, *a, **k: self
    import sklearn.cluster
    import ViT_CX as authors  # the authors' module

    def agglomerative(affinity="euclidean", **kwargs):  # shim 2: scikit-learn >= 1.4 names it metric
        return sklearn.cluster.AgglomerativeClustering(metric=affinity, **kwargs)

    authors.AgglomerativeClustering = agglomerative
    model = timm.create_model("deit_tiny_patch16_224", num_classes=1000)
    model.load_state_dict(load_file(DATA / "deit_tiny_patch16_224.safetensors"), strict=True)
    model.eval()
    inputs = torch.from_numpy(np.load(REFERENCE / "inputs.npy"))
    maps, seconds = [], []
    for i, x in enumerate(inputs):
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        sal = authors.ViT_CX(model, x[None], target_layer=model.blocks[-1].norm1, target_category=TARGETS[i])
        seconds.append(time.perf_counter() - start)
        maps.append(np.asarray(sal, dtype=np.float32))
        print(f"image {i}: {seconds[-1]:.1f} s", flush=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, maps=np.stack(maps), targets=np.array(TARGETS), seed=args.seed,
                        seconds=np.array(seconds), commit=COMMIT,
                        versions=f"torch {torch.__version__}, timm {timm.__version__}, "
                                 f"scikit-learn {sklearn.__version__}")
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
