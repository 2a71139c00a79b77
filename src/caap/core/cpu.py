"""What the CPU can do natively, for the warnings of the reduced-precision modes (docs/PERFORMANCE.md)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that multiply bfloat16 natively (Linux cpuinfo names)


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux x86 ``flags``, Arm ``Features``); None elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def native_bf16() -> bool | None:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16, AMX-BF16 or Arm's BF16); None when unknown.
    Without it, PyTorch converts every bfloat16 operand to float32 and back, which is slower than float32."""
    flags = cpu_flags()
    if flags is None:
        return None
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return any(f in flags for f in BF16_FLAGS)
