"""How many runs go through the model at once: memory and cache budgets, measured on the machines at hand."""

from __future__ import annotations

import torch

from caap.errors import CaapError

CPU_CHUNK_BYTES = 96 * 2**20  # CAAP on the CPU: a chunk's block activations (measured, see caap_batch_size)
CPU_CHUNK_TOKENS = 2048  # module forwards (baselines) on the CPU: ~2k tokens per chunk (measured)
CUDA_MODULE_BATCH = 256  # module forwards on CUDA
MAX_BATCH = 1024


def check_batch_size(batch_size) -> int | None:
    """``None`` (automatic) or a positive int."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CaapError(f"batch_size must be a positive int or None, got {batch_size!r}")
    return batch_size


def caap_batch_size(n_tokens: int, dim: int, device: torch.device, elem: int) -> int:
    """Patched variants per chunk: a memory budget on CUDA, about 96 MiB of block activations on the CPU.

    Per variant a block holds about ``16 D`` values per token (residual, norm, qkv, attention output,
    MLP hidden ``4D`` and its activation) plus an ``N x N`` attention row block. The CPU budget was chosen by
    timing chunk sizes on real models: docs/PERFORMANCE.md ("Chunks sized to the device").
    """
    per_variant = elem * n_tokens * (16 * dim + n_tokens)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(1, min(MAX_BATCH, int(free * 0.4) // per_variant)))
    return int(max(1, min(MAX_BATCH, CPU_CHUNK_BYTES // per_variant)))


def module_batch_size(n_tokens: int, device: torch.device) -> int:
    """Images per whole-model forward: ~2k tokens on the CPU (cache-sized), 256 on CUDA."""
    if device.type == "cuda":
        return CUDA_MODULE_BATCH
    return max(1, CPU_CHUNK_TOKENS // n_tokens)
