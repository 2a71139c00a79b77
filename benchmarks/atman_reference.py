"""AtMan reference maps from the authors' own functions on the real DeiT-Tiny, for tests/test_atman.py (issue 34).

    python benchmarks/atman_reference.py --atman-repo CHECKOUT [--out benchmarks/results/atman_reference.npz]

``CHECKOUT``: a checkout of github.com/Aleph-Alpha/AtMan (made at commit 847f09078c6c5614ac89866d28c3a25787d4782d).
The authors' explainers wrap MAGMA (GPT-J with a CLIP image prefix, a 6B checkpoint and a GPU) and BLIP; neither
runs here, and neither is an ImageNet classifier. What defines AtMan is model-independent and is theirs, imported
from the checkout by file path, nothing copied: ``manipulate_attention_scores`` (the scores shifted to a row minimum
of 0, the suppressed keys' columns multiplied by their factors) and ``ConceptualSuppression`` (which other tokens a
token's suppression takes along, and their factors). This script puts them into DeiT-Tiny's attention the way their
GPT-Neo code does (every block, every head, the factor tensor built as their ``get_modified_causal_attention_mask``:
ones, the suppressed tokens' key columns set to their factors), runs one forward per patch token with batch 1 as
their loop does, and takes their delta cross entropy (``CE(original) − CE(suppressed)``, ``get_delta_cross_entropies``)
with the authors' ``Explainer`` defaults: factor 0.1, conceptual suppression threshold 0.6, factors scaled by
similarity. The embeddings compared are DeiT's transformer inputs ``z_0``. Inputs: the 8 reference inputs of
``../shared/reference/deit_tiny_dev8`` with their true labels; written: ``maps`` ``[8, 14, 14]`` (their sign), the
targets and the seconds per image.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import time
import types
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from caap.data.real import data_dir
from caap.io import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
DATA = data_dir(ROOT)
REFERENCE = Path(os.environ.get("CAAP_REFERENCE_DIR", ROOT.parent / "shared" / "reference" / "deit_tiny_dev8"))
TARGETS = [0, 125, 250, 375, 500, 625, 750, 875]  # the reference README's true labels
COMMIT, FACTOR, THRESHOLD = "847f09078c6c5614ac89866d28c3a25787d4782d", 0.1, 0.6


def authors_module(repo: Path, name: str) -> types.ModuleType:
    """One of the authors' files, imported by path (their package's ``__init__`` pulls in MAGMA)."""
    spec = importlib.util.spec_from_file_location(name, repo / "atman-magma" / "atman_magma" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atman-repo", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "atman_reference.npz")
    args = parser.parse_args()
    manipulate = authors_module(args.atman_repo, "manipulate_attention").manipulate_attention_scores
    suppression = authors_module(args.atman_repo, "conceptual_suppression").ConceptualSuppression

    model = timm.create_model("deit_tiny_patch16_224", num_classes=1000)
    model.load_state_dict(load_file(DATA / "deit_tiny_patch16_224.safetensors"), strict=True)
    model.eval()
    state = {"factors": None}

    def attention(self, x, attn_mask=None, is_causal=False):  # timm's Attention, manipulated before scaling
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-2, -1)  # [1, H, N, N], unscaled (their GPT-Neo default manipulates before scaling)
        if state["factors"] is not None:
            s = manipulate(s, torch.ones(1, 1, n, n, dtype=torch.bool), state["factors"], multiplicative=True)
        a = (s * self.scale).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))

    for block in model.blocks:
        block.attn.forward = types.MethodType(attention, block.attn)
    inputs = torch.from_numpy(np.load(REFERENCE / "inputs.npy"))
    maps, seconds = [], []
    for i, x in enumerate(inputs):
        start = time.perf_counter()
        with torch.no_grad():
            z0 = model.norm_pre(model._pos_embed(model.patch_embed(x[None])))  # [1, N, D]
            n = z0.shape[1]
            configs = [{"suppression_token_index": [-1], "suppression_factor": [1.0]}] + [
                {"suppression_token_index": [t], "suppression_factor": [FACTOR]} for t in range(1, n)]
            configs = suppression(z0, THRESHOLD, True).modify_configs(configs)
            target = torch.tensor([TARGETS[i]])
            state["factors"] = None
            default = F.cross_entropy(model(x[None]), target)
            deltas = []
            for config in configs[1:]:
                factors = torch.ones(1, 1, n, n)
                for token, factor in zip(config["suppression_token_index"], config["suppression_factor"],
                                         strict=True):
                    factors[:, :, :, token] = factor
                state["factors"] = factors
                deltas.append(float(default - F.cross_entropy(model(x[None]), target)))
        seconds.append(time.perf_counter() - start)
        maps.append(np.array(deltas, dtype=np.float32).reshape(14, 14))
        print(f"image {i}: {seconds[-1]:.1f} s", flush=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, maps=np.stack(maps), targets=np.array(TARGETS), seconds=np.array(seconds),
                        factor=FACTOR, threshold=THRESHOLD, commit=COMMIT,
                        versions=f"torch {torch.__version__}, timm {timm.__version__}")
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
