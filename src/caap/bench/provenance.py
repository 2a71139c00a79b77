"""Where a run's numbers come from: the code (git commit, dirty flag, a hash of the package's source), the machine
(CPU model, cores, threads, device) and the versions of the libraries that compute them. ``caap bench`` records
it in ``config.json`` and refuses to resume a run with other code unless told to (:func:`check_resume`)."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

from caap.errors import CaapError

PACKAGE = Path(__file__).resolve().parents[1]  # src/caap


@lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 of every ``.py`` file of the installed caap package (paths and contents, sorted): changes with any
    edit of the code, committed or not."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def file_hash(path: str | Path | None) -> str | None:
    """sha256 of a weights file (None when ``path`` is no file: a hub name, or no weights). Weights the repository
    cannot hold (self-trained ones over the snapshot limit) are named by it, so a rerun can tell them apart."""
    if path is None or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE), *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code() -> dict:
    """``{"commit", "dirty", "source"}``: the git commit of the checkout caap runs from (None outside one),
    whether its tracked files differ from that commit, and :func:`source_hash`."""
    commit = _git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "dirty": dirty, "source": source_hash()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | str) -> dict:
    """The CPU model, its cores (those this process may use), torch's threads and the device (with the GPU's
    name on CUDA)."""
    device = torch.device(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": cpu_model(), "cores": cores, "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def versions() -> dict:
    """The versions a run's numbers come from."""
    import numpy
    import scipy
    import timm

    from caap.version import __version__

    found = {"caap": __version__, "python": platform.python_version(), "torch": torch.__version__,
             "timm": timm.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__}
    try:
        import transformers

        found["transformers"] = transformers.__version__
    except ImportError:
        pass
    return found


def record(device: torch.device | str) -> dict:
    """Everything above, for ``config.json``'s ``info``."""
    return {"code": code(), "machine": machine(device), "versions": versions()}


def check_resume(previous: dict | None, now: dict, allow_code_change: bool) -> list[dict]:
    """The code history of a run folder after this start: ``previous`` is the stored ``info`` (None for a new
    run). Resuming with other code (another source hash: any commit or uncommitted edit that changes the package)
    is refused unless ``allow_code_change``; every change of code or commit is appended, so the run says what it
    spans."""
    history = list((previous or {}).get("code_history") or ([previous["code"]] if previous and "code" in previous
                                                             else []))
    if history and history[-1].get("source") != now["code"]["source"]:
        if not allow_code_change:
            then = history[-1]
            raise CaapError(
                f"the run was started with other code (commit {then.get('commit')}, source {then.get('source')}; "
                f"now commit {now['code']['commit']}, source {now['code']['source']}): its records would mix two "
                "versions; use another folder, or allow_code_change to resume anyway (recorded in config.json)")
    if not history or (history[-1].get("source"), history[-1].get("commit")) != (now["code"]["source"],
                                                                                 now["code"]["commit"]):
        history.append(now["code"])  # a commit that does not touch the code is recorded, not refused
    return history
