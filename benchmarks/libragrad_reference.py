"""LibraGrad reference maps from the authors' timm fork on the real DeiT-Tiny, for tests/test_libragrad.py (issue 34).

    PYTHONPATH=FORK:DEPS python benchmarks/libragrad_reference.py [--out benchmarks/results/libragrad_reference.npz]

``FORK``: the ``timm`` folder of github.com/NightMachinery/pytorch-image-models-libragrad-v1 (made at commit
727da81, ``git archive HEAD timm``), put before the installed timm; ``DEPS``: its imports that caap does not have
(``pip install --target DEPS --no-deps pynight brish icecream pytz blend_modes kornia kornia_rs humanize datasets
multiprocess pyarrow dill xxhash fsspec``). pynight's ``common_jax`` only registers a pytree with jax; it is stubbed
here, as jax is neither installed nor reached.

Their model, their gradient modes: the fork's ``deit_tiny_patch16_224`` (every LayerNorm, GELU, attention and
linear layer replaced by their ``*Decomposed`` classes) loaded with the real weights, and
``configure_gradient_modes`` called with the values their ``LibraGrad`` preset sets (decompv-libragrad-v1 79e2ae9,
``decompv/x/gbrand.py``: gradient mode ``LX1``, head softmax ``S1``, patchifier ``DS100``, MLP multiplication
``DU``; decompv itself is not imported: its boot module starts a debugger and a notifier). The attribution is
their ``blocks__0__CAT_s:sum`` (``transform_CAT``: ``h ⊙ ∂reward/∂h`` summed over channels at the block-0 input
``h = pixels2patches(x)``, ``reward`` the target's softmax probability as their ``backward_softmax_p`` path computes
it), read at the patch tokens. Inputs: the 8 reference inputs of ``../shared/reference/deit_tiny_dev8`` with their
true labels; written: ``maps`` ``[8, 14, 14]``, ``logit_maps`` (the same with the logit, their ``WO-Head``), the
targets, the seconds per image.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.modules["pynight.common_jax"] = types.ModuleType("pynight.common_jax")  # a jax pytree registration, unused
# configure_gradient_modes reads two flags from decompv's boot module (which starts a debugger and a notifier):
# their defaults, unset environment variables, are False
_boot = types.ModuleType("decompv.early_boot")
_boot.run_check_completeness_mode_p = _boot.run_compute_completeness_mode_p = False
sys.modules["decompv"], sys.modules["decompv.early_boot"] = types.ModuleType("decompv"), _boot
import timm  # noqa: E402  (the fork, by PYTHONPATH)
from timm.night import decomposition  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# caap itself cannot be imported beside the fork (it needs the installed timm): its data folder rule, by hand
DATA = Path(os.environ.get("CAAP_DATA_DIR", ROOT.parent / "shared" / "data"))
REFERENCE = Path(os.environ.get("CAAP_REFERENCE_DIR", ROOT.parent / "shared" / "reference" / "deit_tiny_dev8"))
TARGETS = [0, 125, 250, 375, 500, 625, 750, 875]  # the reference README's true labels
FORK, DECOMPV = "727da81", "79e2ae9"


def block0_ixg(model, x: torch.Tensor, target: int, softmax: bool) -> np.ndarray:
    """Their ``blocks__0__CAT_s:sum`` at the patch tokens, ``[14, 14]``."""
    h = model.pixels2patches(x[None]).detach().requires_grad_(True)  # [1, 197, 192]
    logits = model.forward_patch_level(h)
    reward = logits.softmax(-1)[0, target] if softmax else logits[0, target]
    (grad,) = torch.autograd.grad(reward, h)
    return (h * grad).sum(-1)[0, 1:].detach().numpy().reshape(14, 14)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "libragrad_reference.npz")
    args = parser.parse_args()
    if not timm.__file__.endswith(os.path.join("timm", "__init__.py")) or not hasattr(timm, "night"):
        raise SystemExit(f"timm here is {timm.__file__}, not the LibraGrad fork: put its folder first on PYTHONPATH")
    decomposition.configure_gradient_modes(gradient_mode_brand="LX1", patchifier_gbrand="DS100",
                                           mlp_mul_gbrand="DU", softmax_mode="S1")
    model = timm.create_model("deit_tiny_patch16_224", num_classes=1000)
    model.load_state_dict(load_file(DATA / "deit_tiny_patch16_224.safetensors"), strict=True)
    model.eval()
    inputs = torch.from_numpy(np.load(REFERENCE / "inputs.npy"))
    maps, logit_maps, seconds = [], [], []
    for i, x in enumerate(inputs):
        start = time.perf_counter()
        maps.append(block0_ixg(model, x, TARGETS[i], softmax=True))
        seconds.append(time.perf_counter() - start)
        logit_maps.append(block0_ixg(model, x, TARGETS[i], softmax=False))
        print(f"image {i}: {seconds[-1]:.2f} s", flush=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, maps=np.stack(maps), logit_maps=np.stack(logit_maps), targets=np.array(TARGETS),
                        seconds=np.array(seconds), fork=FORK, decompv=DECOMPV,
                        backward_softmax=decomposition.dynamic_obj.backward_softmax_p,
                        versions=f"torch {torch.__version__}, timm fork {timm.__version__}")
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, args.out)  # atomic
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
