"""LeGrad as its authors compute it (issue 34): caap's maps against the authors' own code on an open_clip tower
(benchmarks/legrad_reference.py), and, on the real DeiT-Tiny, against a naive loop written here from the paper's
equations (the authors' code explains open_clip models only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEIT_TINY, needs_real_data

from caap import methods
from caap.adapters.zeroshot import ZeroShot
from caap.errors import CaapError

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "benchmarks" / "results" / "legrad_reference.npz"
INPUTS = ROOT.parent / "shared" / "reference" / "deit_tiny_dev8" / "inputs.npy"
TARGETS = [0, 125, 250, 375, 500, 625, 750, 875]  # the reference inputs' true labels


def reference_tower(ref) -> torch.nn.Module:
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    cfg = CLIPVisionCfg(layers=3, width=32, head_width=16, patch_size=8, image_size=32)
    tower = _build_vision_tower(16, cfg).eval()
    tower.load_state_dict({k[len("weight/"):]: torch.from_numpy(ref[k]) for k in ref.files if k.startswith("weight/")})
    return tower


def upsampled(scores: torch.Tensor, patch: int) -> np.ndarray:
    """The authors' last steps: bilinear upsampling by the patch size, then min-max per map."""
    up = F.interpolate(scores[:, None], scale_factor=patch, mode="bilinear")[:, 0]
    low, high = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    return ((up - low) / (high - low)).numpy()


@pytest.mark.parametrize("which", [0, 1])
def test_the_maps_equal_the_authors_code(which):
    """The authors' ``compute_legrad_clip`` (their pinned open_clip 2.23) with ``layer_index`` 0 and -2 (their
    default) on 4 inputs and 2 prompts: caap's maps, upsampled as theirs, agree to float rounding."""
    ref = np.load(REFERENCE)
    tower, inputs, text = reference_tower(ref), torch.from_numpy(ref["inputs"]), torch.from_numpy(ref["text"])
    layer_index = int(ref["layer_indices"][which])
    explainer = methods.get("legrad")(ZeroShot(tower, text, 100.0), start_layer=layer_index)
    for k in range(text.shape[0]):
        ours = upsampled(explainer.explain(inputs, target=[k] * len(inputs)).scores, 8)
        # maps in [0, 1]: float32 rounding of the gradients (~1e-7 of the max) through two normalisations;
        # measured 4e-7 here, 2e-6 leaves room for another CPU's summation order
        np.testing.assert_allclose(ours, ref["maps"][which][:, k], rtol=0, atol=2e-6)
    assert np.abs(ref["maps"][0] - ref["maps"][1]).max() > 0.1  # the two start layers give different maps


def naive_legrad(model, x: torch.Tensor, target: int, start: int) -> torch.Tensor:
    """LeGrad from the paper's equations on a timm ViT, written out: attention computed by hand in every block
    (the probabilities kept as graph leaves' parents), each block's output averaged over tokens and read by the
    final norm and head, ``ReLU(∂s_l/∂A_l)`` averaged over heads and query rows, summed, min-max."""
    z = model._pos_embed(model.patch_embed(x))
    probs, outs = [], []
    for block in model.blocks:
        h = block.norm1(z)
        b, n, d = h.shape
        heads = block.attn.num_heads
        qkv = block.attn.qkv(h).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q * block.attn.scale) @ k.transpose(-2, -1)).softmax(-1)  # [B, heads, N, N]
        probs.append(a)
        z = z + block.attn.proj((a @ v).transpose(1, 2).reshape(b, n, d))
        z = z + block.mlp(block.norm2(z))
        outs.append(z)
    total = 0
    for layer in range(start, len(model.blocks)):
        pooled = model.norm(outs[layer].mean(1))  # [B, D]: the mean token through the final norm
        score = model.head(pooled)[0, target]
        (g,) = torch.autograd.grad(score, probs[layer], retain_graph=True)
        total = total + g.clamp(min=0).mean(1).mean(1)[0, 1:]
    return ((total - total.min()) / (total.max() - total.min())).detach()


@needs_real_data
@pytest.mark.skipif(not INPUTS.is_file(), reason="no reference inputs")
@pytest.mark.parametrize("start", [-2, 0])
def test_the_real_deit_tiny_equals_the_naive_loop(start):
    from caap.adapters import create_model

    model = create_model("deit_tiny_patch16_224", DEIT_TINY)
    inputs = torch.from_numpy(np.load(INPUTS))[:2]
    att = methods.get("legrad")(model, start_layer=start).explain(inputs, target=TARGETS[:2])
    for b in range(2):
        expected = naive_legrad(model, inputs[b : b + 1], TARGETS[b], start % 12)
        # min-max maps in [0, 1]; both compute the attention unfused in float32: measured equal here, 1e-6 for
        # another CPU's summation order
        torch.testing.assert_close(att.scores[b].flatten(), expected, rtol=0, atol=1e-6)


def test_bad_options_are_refused_in_one_line():
    from caap.adapters.tiny import timm_vit

    model = timm_vit()
    with pytest.raises(CaapError, match="pool must be one of mean, head, got 'cls'"):
        methods.get("legrad")(model, pool="cls")
    with pytest.raises(CaapError, match=r"start_layer must be a block index in \[-"):
        methods.get("legrad")(model, start_layer=99)
