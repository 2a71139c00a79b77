"""RISE reference maps from its authors' own code, for tests/test_reference_maps.py (issue 23).

    python benchmarks/rise_reference.py --rise-repo CHECKOUT [--out benchmarks/results/rise_reference.npz]

``CHECKOUT``: a checkout of github.com/eclique/RISE (the maps were made at commit
d91ea006d4bb9b7990347fe97086bdc0f5c1fe10); its ``explanations.RISE`` is imported from there, nothing of it is copied,
and ``torch.Tensor.cuda`` is made a no-op (their class moves its masks to the GPU). On the real DeiT-Tiny (with a
softmax, as their notebooks wrap the model), two of the reference inputs of ``../shared/reference/deit_tiny_dev8``
and **caap's masks** (``rise:masks=500:seed=0``, loaded with their ``load_masks``), it writes their saliency of the
true label ``[2, 224, 224]``; caap's ``rise`` on the same masks must equal it (their masked image is ``mask ·
x`` in normalised space: caap's ``mean`` context).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from caap import methods
from caap.adapters import create_model
from caap.data.real import data_dir
from caap.io import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir(ROOT)
REFERENCE = Path(os.environ.get("CAAP_REFERENCE_DIR", ROOT.parent / "shared" / "reference" / "deit_tiny_dev8"))
TARGETS = [0, 125]
MASKS, SEED = 500, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rise-repo", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rise_reference.npz")
    args = parser.parse_args()
    sys.path.insert(0, str(args.rise_repo))
    torch.Tensor.cuda = lambda self, *a, **k: self  # their masks live on the GPU
    from explanations import RISE  # the authors' class

    torch.set_num_threads(2)
    model = create_model("deit_tiny_patch16_224", DATA / "deit_tiny_patch16_224.safetensors")
    inputs = torch.from_numpy(np.load(REFERENCE / "inputs.npy"))[: len(TARGETS)]
    ours = methods.get("rise")(model, masks=MASKS, seed=SEED)
    masks = ours.make_masks(0, MASKS, (224, 224))[:, None].numpy()  # [N, 1, H, W]
    theirs = RISE(torch.nn.Sequential(model, torch.nn.Softmax(dim=1)), (224, 224), gpu_batch=50)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "masks.npy", masks)
        theirs.load_masks(str(Path(tmp) / "masks.npy"))
    theirs.p1 = 0.5
    maps = []
    with torch.no_grad():
        for i, t in enumerate(TARGETS):
            maps.append(theirs(inputs[i : i + 1])[t].numpy())
    maps = np.stack(maps).astype(np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, maps=maps, targets=np.array(TARGETS), masks=MASKS, seed=SEED,
                        commit="d91ea006d4bb9b7990347fe97086bdc0f5c1fe10")
    atomic_write_bytes(args.out, buffer.getvalue())
    att = ours.explain(inputs, target=TARGETS, progress=False)
    print(f"max |ours - theirs| / max: {float(np.abs(att.scores.numpy() - maps).max() / np.abs(maps).max()):.2e}")


if __name__ == "__main__":
    main()
