"""Timing and memory for the benchmark scripts: calls timed until enough time has passed (synchronised on CUDA),
the same-run GEMM peak of a ViT block's matrix products, a process's resident memory, and map agreement."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, min_seconds: float = 0.0) -> tuple[float, object]:
    """(seconds per call, last result), repeating until ``min_seconds`` have passed."""
    calls, result = 0, None
    sync(device)
    start = time.perf_counter()
    while True:
        result = fn()
        calls += 1
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls, result


def gemm_peak(model, n_tokens: int, chunk: int, dtype: torch.dtype, device: torch.device) -> float:
    """FLOP/s of the engine's matrix products (one block at ``chunk`` variants), back to back, no other work."""
    block = model.blocks[0]
    dim, hidden, heads = block.attn.qkv.in_features, block.mlp.fc1.out_features, block.attn.num_heads
    rows, hd = chunk * n_tokens, dim // heads
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dtype)

    shapes = [  # (a, b) with a @ b, as in one block
        (rand(rows, dim), rand(dim, 3 * dim)),  # qkv
        (rand(chunk * heads, n_tokens, hd), rand(chunk * heads, hd, n_tokens)),  # q k^T
        (rand(chunk * heads, n_tokens, n_tokens), rand(chunk * heads, n_tokens, hd)),  # attn v
        (rand(rows, dim), rand(dim, dim)),  # proj
        (rand(rows, dim), rand(dim, hidden)),  # fc1
        (rand(rows, hidden), rand(hidden, dim)),  # fc2
    ]
    flops = sum(2 * a.numel() * b.shape[-1] for a, b in shapes)

    def run():
        for a, b in shapes:
            torch.matmul(a, b)

    run()
    seconds, _ = timed(run, device, min_seconds=1.0)
    return flops / seconds


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the Spearman rank correlation of two map stacks ``[B, gh, gw]``."""
    from scipy.stats import spearmanr

    return float(np.mean([spearmanr(x.flatten().numpy(), y.flatten().numpy())[0] for x, y in zip(a, b, strict=True)]))


def process_memory(key: str) -> int:
    """Bytes of ``/proc/self/status``'s ``key`` (``"VmRSS:"``, the resident set; ``"VmHWM:"``, its high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def occlusion_runner(model, images: torch.Tensor, targets: list[int], n_tokens: int, chunk: int, device):
    """A call of Captum's ``Occlusion`` with a one-patch window and stride (``None`` without Captum).

    It batches ``perturbations_per_eval`` occluded images per forward: on the CPU the ~2k tokens that suit
    module forwards best (``caap.core.budget.CPU_CHUNK_TOKENS``), on CUDA the engine's chunk."""
    try:
        from captum.attr import Occlusion
    except ImportError:
        return None
    from caap.core.budget import CPU_CHUNK_TOKENS

    patch = model.patch_embed.patch_size
    occ = Occlusion(model)
    per_eval = chunk if device.type == "cuda" else max(1, CPU_CHUNK_TOKENS // n_tokens)

    def run():
        with torch.no_grad():
            return occ.attribute(images, sliding_window_shapes=(3, *patch), strides=(3, *patch), baselines=0.0,
                                 target=targets, perturbations_per_eval=per_eval)

    run()  # warm-up
    return run


def interleaved(calls: dict, rounds: int, device: torch.device, before_round=None) -> tuple[dict, dict, dict]:
    """``(best, every, results)`` of ``calls`` (``{name: fn}``) timed in ``rounds`` interleaved rounds: each name's
    fastest round (seconds per call), all its rounds, and its last result. On a shared machine the minimum is the
    least noisy estimate, and every ratio compares calls measured side by side. ``before_round()``: run at the start
    of each round (a same-run peak)."""
    best: dict[str, float] = {}
    every: dict[str, list[float]] = {}
    results: dict[str, object] = {}
    for _ in range(rounds):
        if before_round is not None:
            before_round()
        for key, fn in calls.items():
            seconds, results[key] = timed(fn, device)
            best[key] = min(best.get(key, float("inf")), seconds)
            every.setdefault(key, []).append(seconds)
    return best, every, results
