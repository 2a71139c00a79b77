"""LeGrad reference maps from the authors' own code, for tests/test_legrad.py (issue 34).

    pip install einops                                                  # the authors' code needs it
    pip install --target OLD --no-deps open_clip_torch==2.23.0            # the authors' pin: open_clip_torch<=2.23.0
    PYTHONPATH=OLD python benchmarks/legrad_reference.py --legrad-repo CHECKOUT [--out FILE.npz]

``CHECKOUT``: a checkout of github.com/WalBouss/LeGrad (made at commit a9edb03ea7e5f3da2f9bd4eb1dee9ab9e0d6c0b3);
its ``legrad`` package is imported from there, nothing of it is copied. The authors' code explains open_clip
models only (``LeWrapper`` patches open_clip's ``VisionTransformer`` and timm-backed SigLIP towers), so the
reference is a small random-init open_clip CLIP vision tower (3 blocks, width 32, 8-px patches, 32-px inputs,
seed 0) with two random unit text embeddings, explained by ``LeWrapper.compute_legrad_clip`` with
``layer_index`` 0 (every block) and -2 (their default). Their pin matters: with open_clip 3.x the blocks they do
not patch run batch-first on the sequence-first stream their patched forward passes, and the maps are silently
wrong for any ``layer_index`` but 0 (we measured a max difference of 0.49 on these inputs).
It writes the tower's weights and configuration, the 4
inputs, the text embeddings and the authors' maps ``[2 layer indices, 4 images, 2 prompts, 32, 32]``;
tests/test_legrad.py checks caap's ``legrad`` (``pool="mean"``, the same start layer) against them after the
authors' bilinear upsampling and min-max normalisation.
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, _build_vision_tower

from caap.io import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
VISION = {"layers": 3, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32}
EMBED, LAYER_INDICES, COMMIT = 16, (0, -2), "a9edb03ea7e5f3da2f9bd4eb1dee9ab9e0d6c0b3"


def tower() -> torch.nn.Module:
    torch.manual_seed(0)
    return _build_vision_tower(EMBED, CLIPVisionCfg(**VISION)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legrad-repo", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "legrad_reference.npz")
    args = parser.parse_args()
    sys.path.insert(0, str(args.legrad_repo))
    from legrad import LeWrapper  # the authors' wrapper

    visual = tower()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(4, 3, 32, 32, generator=generator)
    text = F.normalize(torch.randn(2, EMBED, generator=generator), dim=-1)
    maps = []
    for layer_index in LAYER_INDICES:
        clip = CLIP(EMBED, CLIPVisionCfg(**VISION), CLIPTextCfg(width=32, heads=2, layers=1)).eval()
        clip.visual = copy.deepcopy(visual)  # LeWrapper wraps a whole CLIP; only its tower is used here
        wrapped = LeWrapper(clip, layer_index=layer_index)
        maps.append(np.stack([wrapped.compute_legrad_clip(text_embedding=text, image=inputs[b : b + 1])[0]
                              .detach().numpy() for b in range(len(inputs))]))  # [B, K, H, W]
    maps = np.stack(maps)
    weights = {f"weight/{k}": v.numpy() for k, v in visual.state_dict().items()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, maps=maps, inputs=inputs.numpy(), text=text.numpy(),
                        layer_indices=np.array(LAYER_INDICES), commit=COMMIT,
                        versions=f"torch {torch.__version__}, open_clip {version('open_clip_torch')}", **weights)
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"wrote {args.out}: maps {maps.shape}; tests/test_legrad.py compares caap's (caap's open_clip is 3.x)")


if __name__ == "__main__":
    main()
