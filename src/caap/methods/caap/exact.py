"""Exact CAAP (docs/METHOD.md): one patched run per patch group, batched.

For every variant ``v`` (a patch group of image ``b``) the base run of ``b`` is rerun from the first patched
block and, at the input of every patched block ``l``, the tokens of the group are overwritten with the donor
run's ``z_l``. Blocks before ``min(layers)`` run once per image (the runs' prefix); the variants of all images
then run as batches ``[n, N, D]`` of at most ``batch_size`` rows, with no Python work per patch.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from caap.adapters.capabilities import fast_paths
from caap.core.budget import caap_batch_size, check_batch_size
from caap.core.groups import Variants
from caap.core.scores import apply_score
from caap.core.state import autocast
from caap.core.workspace import Workspace
from caap.errors import CaapError
from caap.methods.base import PROGRESS_DELAY
from caap.methods.caap.runs import Runs, Setting
from caap.methods.caap.strategies import Direction, Effects, Strategy


class Exact(Strategy):
    """One patched run per group (the default).

    Args:
        direction: ``"denoise"`` (the paper's CAAP), ``"noise"`` or ``"both"`` (:mod:`~caap.methods.caap.strategies`).
        batch_size: patched runs per forward chunk (default: from a memory budget; halved on out-of-memory).
        compile: run the patched blocks through ``torch.compile`` (exact up to float rounding; the first call of
            each chunk shape compiles; docs/PERFORMANCE.md says when it pays).
    """

    name = "exact"

    def __init__(self, direction: str | Direction = Direction.DENOISE, batch_size: int | None = None,
                 compile: bool = False) -> None:
        super().__init__(direction)
        self.batch_size = check_batch_size(batch_size)
        if not isinstance(compile, bool):
            raise CaapError(f"compile must be True or False, got {compile!r}")
        self.compile = compile
        self._compiled = None

    def settings(self) -> dict:
        return {**super().settings(), "batch_size": self.batch_size, **({"compile": True} if self.compile else {})}

    def _patched(self, setting: Setting, runs: Runs, variants: Variants, target: torch.Tensor,
                 classes: torch.Tensor | None, progress: bool) -> Effects:
        adapter, device = setting.adapter, setting.device
        prefix, donor, base_scores = runs.base.prefix(setting.first), runs.donor.stream, runs.base.scores
        _, n_tokens, dim = prefix.shape
        with autocast(device, setting.dtype):
            tgt = target.to(device)
            chunk = self.batch_size or caap_batch_size(n_tokens, dim, device, prefix.element_size())
            n_var = len(variants)
            out = torch.empty(n_var, dtype=torch.float32, device=device)
            cols = None if classes is None else classes.to(device)
            out_cls = None if cols is None else torch.empty(n_var, len(cols), dtype=torch.float32, device=device)
            head_rows = head_row_count(adapter, n_tokens)
            var_image = variants.image.to(device)
            pair_variant, pair_token = variants.pair_variant.to(device), variants.pair_token.to(device)
            rows_used, halvings, start = 0, 0, 0
            workspace = None if self.compile else Workspace()  # compiled code plans its own memory
            with tqdm(total=n_var, desc="CAAP", unit="run", disable=not progress, leave=False,
                      delay=PROGRESS_DELAY) as bar:
                while start < n_var:
                    stop = min(start + chunk, n_var)
                    lo, hi = torch.searchsorted(variants.pair_variant, torch.tensor([start, stop])).tolist()
                    img = var_image[start:stop]  # [n]
                    try:
                        zc = _chunk_prefix(prefix, img, workspace)  # [n, N, D], the chunk's own
                        s, rows_used = self._runner()(setting, zc, donor, img, pair_variant[lo:hi] - start,
                                                      pair_token[lo:hi], head_rows, workspace)
                    except torch.OutOfMemoryError:
                        if chunk == 1:
                            raise
                        chunk, halvings = max(1, chunk // 2), halvings + 1  # retry this chunk at half the size
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        continue
                    base = base_scores[img]  # [n, K]
                    out[start:stop] = (s.gather(1, tgt[img, None]) - base.gather(1, tgt[img, None]))[:, 0]
                    if out_cls is not None:
                        out_cls[start:stop] = (s - base)[:, cols]
                    bar.update(stop - start)
                    start = stop
        meta = {"batch_size": chunk, "halvings": halvings, "last_block_rows": rows_used, "patched_runs": n_var}
        return Effects(out, out_cls, base_scores, meta)

    def _runner(self):
        if not self.compile:
            return patched_chunk
        if self._compiled is None:
            self._compiled = torch.compile(patched_chunk, dynamic=False)
        return self._compiled


def _chunk_prefix(prefix: torch.Tensor, img: torch.Tensor, workspace: Workspace | None) -> torch.Tensor:
    """The base prefix of each variant of a chunk, ``[n, N, D]``: a fresh copy, or the workspace's."""
    if workspace is None:
        return prefix[img]
    return torch.index_select(prefix, 0, img, out=workspace.get("stream", (len(img), *prefix.shape[1:]), prefix))


def patched_chunk(setting: Setting, zc, donor, img, rows, toks, head_rows, workspace) -> tuple[torch.Tensor, int]:
    """Scores ``[n, K]`` of ``n`` patched variants (``zc``: their base prefix ``[n, N, D]``, a copy).

    ``rows``/``toks``: every patched token of the chunk (variant row, token index); ``img``: the image of each
    variant; ``donor``: ``{l: [B, N, D]}`` the stream copied in at each patched block. With a ``workspace``,
    blocks run in place where the adapter can (``zc`` is overwritten). Returns the scores and the number of rows
    the last block computed (0: all)."""
    adapter, last, rows_used = setting.adapter, setting.adapter.num_blocks - 1, 0
    paths = fast_paths(adapter)
    imgs = img[rows]  # [P_chunk] image of each patched token
    owned = workspace is not None  # zc is the workspace's: blocks may overwrite it (not a module's output)
    for index in range(setting.first, adapter.num_blocks):
        if index in donor:
            zc[rows, toks] = donor[index][imgs, toks].to(zc.dtype)
        rows_only = paths.run_block_rows(index, zc, head_rows) if index == last and head_rows else None
        # [n, R, D] when the last block computed only the rows the head reads, else [n, N, D]
        if rows_only is not None:
            zc = rows_only
        else:
            inplace = paths.run_block_inplace(index, zc, workspace) if owned else None
            owned = inplace is not None
            zc = inplace if owned else adapter.run_block(index, zc, setting.grid)
        rows_used = rows_used or (head_rows if rows_only is not None else 0)
    return apply_score(setting.score_fn, adapter.head(zc)), rows_used


def head_row_count(adapter, n_tokens: int) -> int:
    """``k`` when the head reads only rows ``0..k-1`` and the adapter can compute just those in the last block
    (exact: the rows' queries attend to every key); 0 to run the last block in full."""
    rows = adapter.head_rows
    if not rows or tuple(rows) != tuple(range(len(rows))) or len(rows) >= n_tokens:
        return 0
    return len(rows)
