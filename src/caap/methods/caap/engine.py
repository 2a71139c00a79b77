"""The batched, exact CAAP engine (DESIGN §1–2).

For every patch group ``g`` of image ``b`` the engine runs the model on the context image ``x̃_b`` and,
at the input of every block ``l`` in ``layers``, overwrites the tokens of ``g`` with the source image's
``z_l(x_b)``. ``A[g] = s(patched)[c] - s(context)[c]``.

Cost: blocks before ``min(layers)`` run once per image; the patched variants of all images are then run
as batches ``[n_variants, N, D]`` of at most ``batch_size`` rows, with no Python work per patch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from caap.adapters import Adapter
from caap.core.budget import caap_batch_size, check_batch_size
from caap.core.contexts import Context, make_context
from caap.core.groups import Variants, check_groups
from caap.core.layers import check_layers
from caap.core.scores import ScoreFn, apply_score, make_score
from caap.core.state import autocast
from caap.core.workspace import Workspace
from caap.errors import CaapError
from caap.methods.base import PROGRESS_DELAY, Explainer, Forward, Maps, register
from caap.methods.caap.fast import fast_scores
from caap.methods.caap.refine import coarse_to_fine, fast_then_exact

MODES = ("exact", "fast")


@dataclass
class _Runs:
    """The unpatched forwards of a call: source activations at each patched layer ``{l: [B, N, D]}``, source
    and context scores ``[B, K]``, and the context's residual stream entering the first patched block."""

    source: dict[int, torch.Tensor]
    source_scores: torch.Tensor
    context_prefix: torch.Tensor
    context_scores: torch.Tensor | None  # None until the fast mode's own context run


@register
class CAAP(Explainer):
    """Causal Attribution via Activation Patching.

    Args:
        model: a timm ``VisionTransformer``, a Hugging Face ViT/DeiT/DINOv2 classifier, or a caap adapter.
        layers: 0-based block indices whose *input* is patched, or ``"START:STOP"`` (default: the band in the
            model's card, ``adapter.defaults["layers"]``, when it carries one, else the middle third
            ``range(L//3, 2L//3)``, which the layer sweep on DeiT-Tiny found on the best plateau; docs/RESULTS.md).
        context: ``"mean"``, ``"black"``, ``"blur"`` / ``"blur:SIGMA"``, ``"noise"`` / ``"noise:STD:SEED"``,
            a tensor ``[3, H, W]`` / ``[B, 3, H, W]`` (normalised) or a :class:`caap.core.contexts.Context`.
        score: ``"logit"``, ``"prob"``, ``"logprob"`` or a callable ``logits [N, C] -> scores [N, K]``.
        groups: optional integer map ``[gh, gw]`` (or ``[B, gh, gw]``): patches of a group are patched in
            one run and share its score.
        batch_size: patched runs per forward chunk (default: from a memory budget).
        refine: refinement (approximate): with ``mode="exact"``, score ``coarse × coarse`` superpatches first,
            then single patches only inside the top ``refine`` fraction of superpatches (the others get their
            superpatch's score over its size); with ``mode="fast"``, the fast map first, then exact CAAP for
            the top ``refine`` fraction of patches by it. ``None``: no refinement.
        coarse: superpatch side in patches for ``refine`` in exact mode (edge superpatches may be smaller).
        compile: run the patched blocks through ``torch.compile`` (exact up to float rounding; the first
            call of each chunk shape compiles). See docs/PERFORMANCE.md for when it pays.
        mode: ``"exact"`` (default: one patched run per group) or ``"fast"``: each group's own tokens exact,
            the other tokens to first order, about four forward passes per image (docs/FAST.md).

    ``device``, ``dtype`` and ``normalization`` are shared by every method (:class:`~caap.methods.Explainer`).
    Patches whose group id is negative are not patched; their score is NaN.
    """

    name = "caap"
    resolution = "patch"

    def __init__(
        self,
        model: nn.Module | Adapter,
        layers: str | Iterable[int] | None = None,
        context: str | torch.Tensor | Context = "mean",
        score: str | ScoreFn = "logit",
        groups: torch.Tensor | None = None,
        batch_size: int | None = None,
        refine: float | None = None,
        coarse: int = 2,
        compile: bool = False,
        mode: str = "exact",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if mode not in MODES:
            raise CaapError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        if mode == "fast":
            for index in range(self.adapter.num_blocks):
                self.adapter.block_view(index)  # the fast mode needs every block as token-wise pieces
        if refine is not None and (isinstance(refine, bool) or not isinstance(refine, (int, float))
                                   or not 0 < refine <= 1):
            raise CaapError(f"refine must be a fraction in (0, 1] of superpatches to refine, got {refine!r}")
        if isinstance(coarse, bool) or not isinstance(coarse, int) or coarse < 2:
            raise CaapError(f"coarse must be an int >= 2 (superpatch side in patches), got {coarse!r}")
        self.refine, self.coarse = refine, coarse
        if not isinstance(compile, bool):
            raise CaapError(f"compile must be True or False, got {compile!r}")
        self.compile = compile
        self._compiled = None
        if layers is None:
            layers = self.adapter.defaults.get("layers")
        self.layers = check_layers(layers, self.adapter.num_blocks)
        self.context = make_context(context)
        self.score_name, self.score_fn = make_score(score)
        self.groups = groups
        self.batch_size = check_batch_size(batch_size)

    def settings(self) -> dict:
        """JSON-friendly description of the configuration."""
        return {
            **super().settings(),
            "layers": self.layers,
            "context": self.context.describe(),
            "score": self.score_name,
            "mode": self.mode,
            "batch_size": self.batch_size,
            **({"refine": self.refine, "coarse": self.coarse} if self.refine is not None else {}),
            **({"compile": True} if self.compile else {}),
        }

    call_options = frozenset({"all_classes", "groups"})

    def _forward(self, images: torch.Tensor) -> Forward:
        """The source and context forwards of ``images`` ``[B, 3, H, W]`` that every patched run builds on;
        the source run's scores resolve the target."""
        grid = self.adapter.grid((images.shape[2], images.shape[3]))
        with torch.inference_mode():
            runs = self._forward_runs(images, grid, self.device)
        return Forward(runs.source_scores, runs)

    @torch.inference_mode()
    def _attribute(
        self,
        images: torch.Tensor,
        target: torch.Tensor,
        *,
        grid: tuple[int, int],
        forward: Forward,
        all_classes: bool = False,
        groups: torch.Tensor | None = None,
    ) -> Maps:
        """CAAP maps: ``scores`` ``[B, gh, gw]`` (score units, signed) and, with ``all_classes=True``,
        ``class_scores`` ``[B, K, gh, gw]`` for every class at no extra cost. ``groups`` overrides the
        constructor's group map for this call; the call's ``progress`` bar counts the patched runs."""
        progress = self._progress
        if not isinstance(all_classes, bool):
            raise CaapError(f"all_classes must be True or False, got {all_classes!r}")
        groups = self.groups if groups is None else groups
        runs, device = forward.cache, self.device
        if self.refine is not None and groups is not None:
            raise CaapError("refine chooses its own patch groups; pass either groups or refine, not both")
        if self.mode == "fast":
            maps = self._fast(images, target, grid, check_groups(groups, images.shape[0], grid), all_classes, runs)
            return maps if self.refine is None else fast_then_exact(self, maps, images, target, grid, all_classes,
                                                                    progress, runs)
        if self.refine is None:
            return self._run(images, target, grid, device, check_groups(groups, images.shape[0], grid), all_classes,
                             progress, runs)
        return coarse_to_fine(self, images, target, grid, all_classes, progress, runs)

    def _fast(self, images, target, grid, groups, all_classes, runs: _Runs) -> Maps:
        """The fast mode (methods/caap/fast.py): every group's own tokens exact, the other tokens to first order."""
        variants = Variants.from_groups(groups, self.adapter.num_prefix)
        classes = runs.source_scores.shape[1] if all_classes else None
        with torch.inference_mode(False):
            out, runs.context_scores = fast_scores(self.adapter, self.layers, self.score_fn, runs.source,
                                                   runs.context_prefix, target, variants, classes, self.dtype)
        out_all = out if all_classes else None
        if all_classes:
            out = out.gather(1, target.to(out.device)[variants.image.to(out.device), None])[:, 0]
        scores, class_scores = _to_grid(out, out_all, variants, images.shape[0], grid)
        return Maps(scores, class_scores, {"variants": len(variants), **self._run_scores(runs, target)})

    def _run_scores(self, runs: _Runs, target: torch.Tensor) -> dict:
        idx = target.to(runs.context_scores.device)[:, None]
        return {"context_score": runs.context_scores.gather(1, idx)[:, 0].float().cpu(),
                "source_score": runs.source_scores.gather(1, idx)[:, 0].float().cpu()}

    def _forward_runs(self, images: torch.Tensor, grid: tuple[int, int], device: torch.device) -> _Runs:
        """The source and context forwards of ``images`` ``[B, 3, H, W]`` that every patched run builds on."""
        adapter, layers = self.adapter, self.layers
        contexts = self.context(images, adapter.normalization)  # [B, 3, H, W]
        with autocast(device, self.dtype):
            # Source run: keep z_l(x) at every patched layer; its scores give the default target.
            z = adapter.embed(images)  # [B, N, D]
            n_tokens = z.shape[1]
            if n_tokens != adapter.num_prefix + grid[0] * grid[1]:
                raise CaapError(
                    f"embed gave {n_tokens} tokens, expected {adapter.num_prefix} prefix + {grid[0]}x{grid[1]} patches"
                )
            source: dict[int, torch.Tensor] = {}
            for index in range(adapter.num_blocks):
                if index in layers:
                    source[index] = z
                z = adapter.run_block(index, z)
            source_scores = apply_score(self.score_fn, adapter.head(z))  # [B, K]

            # Context run: the prefix up to the first patched block is shared by every variant.
            c = adapter.embed(contexts)
            for index in range(layers[0]):
                c = adapter.run_block(index, c)
            context_prefix = c  # [B, N, D]
            if self.mode == "fast":  # the fast mode runs the rest of the context itself, with its gradients
                return _Runs(source, source_scores, context_prefix, None)
            for index in range(layers[0], adapter.num_blocks):
                c = adapter.run_block(index, c)
            context_scores = apply_score(self.score_fn, adapter.head(c))  # [B, K]
        return _Runs(source, source_scores, context_prefix, context_scores)

    def _run(
        self,
        images: torch.Tensor,
        tgt: torch.Tensor,
        grid: tuple[int, int],
        device: torch.device,
        groups: torch.Tensor,
        all_classes: bool,
        progress: bool,
        runs: _Runs,
    ) -> Maps:
        adapter = self.adapter
        batch = images.shape[0]
        source, context_prefix, context_scores = runs.source, runs.context_prefix, runs.context_scores
        _, n_tokens, dim = context_prefix.shape

        with autocast(device, self.dtype):
            tgt_dev = tgt.to(device)
            variants = Variants.from_groups(groups, adapter.num_prefix)
            chunk = self.batch_size or caap_batch_size(n_tokens, dim, device, context_prefix.element_size())
            n_var = len(variants)
            out = torch.empty(n_var, dtype=torch.float32, device=device)
            out_all = (
                torch.empty(n_var, context_scores.shape[1], dtype=torch.float32, device=device) if all_classes else None
            )
            head_rows = self._head_row_count(n_tokens)
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
                        zc = self._chunk_prefix(context_prefix, img, workspace)  # [n, N, D], the chunk's own
                        s, rows_used = self._chunk_runner()(
                            zc, source, img, pair_variant[lo:hi] - start, pair_token[lo:hi], head_rows, workspace)
                    except torch.OutOfMemoryError:
                        if chunk == 1:
                            raise
                        chunk, halvings = max(1, chunk // 2), halvings + 1  # retry this chunk at half the size
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        continue
                    base = context_scores[img]  # [n, K]
                    out[start:stop] = (s.gather(1, tgt_dev[img, None]) - base.gather(1, tgt_dev[img, None]))[:, 0]
                    if out_all is not None:
                        out_all[start:stop] = s - base
                    bar.update(stop - start)
                    start = stop

        scores, class_scores = _to_grid(out, out_all, variants, batch, grid)
        meta = {"batch_size": chunk, "halvings": halvings, "last_block_rows": rows_used, "patched_runs": n_var,
                **self._run_scores(runs, tgt)}
        return Maps(scores, class_scores, meta)

    @staticmethod
    def _chunk_prefix(prefix: torch.Tensor, img: torch.Tensor, workspace: Workspace | None) -> torch.Tensor:
        """The context prefix of each variant of a chunk, ``[n, N, D]``: a fresh copy, or the workspace's."""
        if workspace is None:
            return prefix[img]
        return torch.index_select(prefix, 0, img, out=workspace.get("stream", (len(img), *prefix.shape[1:]), prefix))

    def _chunk_runner(self):
        if not self.compile:
            return self._patched_chunk
        if self._compiled is None:
            self._compiled = torch.compile(self._patched_chunk, dynamic=False)
        return self._compiled

    def _patched_chunk(self, zc, source, img, rows, toks, head_rows, workspace) -> tuple[torch.Tensor, int]:
        """Scores ``[n, K]`` of ``n`` patched variants (``zc``: their context prefix ``[n, N, D]``, a copy).

        ``rows``/``toks``: every patched token of the chunk (variant row, token index); ``img``: the image of
        each variant. With a ``workspace``, blocks run in place where the adapter can (``zc`` is overwritten).
        Returns the scores and the number of rows the last block computed (0: all)."""
        adapter, last, rows_used = self.adapter, self.adapter.num_blocks - 1, 0
        imgs = img[rows]  # [P_chunk] image of each patched token
        owned = workspace is not None  # zc is the workspace's: blocks may overwrite it (not a module's output)
        for index in range(self.layers[0], adapter.num_blocks):
            if index in source:
                zc[rows, toks] = source[index][imgs, toks].to(zc.dtype)
            rows_only = adapter.run_block_rows(index, zc, head_rows) if index == last and head_rows else None
            # [n, R, D] when the last block computed only the rows the head reads, else [n, N, D]
            if rows_only is not None:
                zc = rows_only
            else:
                inplace = adapter.run_block_inplace(index, zc, workspace) if owned else None
                owned = inplace is not None
                zc = inplace if owned else adapter.run_block(index, zc)
            rows_used = rows_used or (head_rows if rows_only is not None else 0)
        return apply_score(self.score_fn, adapter.head(zc)), rows_used

    def _head_row_count(self, n_tokens: int) -> int:
        """``k`` when the head reads only rows ``0..k-1`` and the adapter can compute just those in the last
        block (exact: the rows' queries attend to every key); 0 to run the last block in full."""
        rows = self.adapter.head_rows
        if not rows or tuple(rows) != tuple(range(len(rows))) or len(rows) >= n_tokens:
            return 0
        return len(rows)


def _to_grid(out: torch.Tensor, out_all: torch.Tensor | None, variants: Variants, batch: int,
             grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-variant scores ``[V]`` (and ``[V, K]``) as maps ``[B, gh, gw]`` (and ``[B, K, gh, gw]``); patches that
    no variant patched are NaN."""
    gh, gw = grid
    pv = variants.patch_variant.to(out.device)  # [B, gh*gw], -1 where a patch is not patched
    skipped = pv < 0
    scores = out[pv.clamp(min=0)].masked_fill(skipped, float("nan")).view(batch, gh, gw).float().cpu()
    class_scores = None
    if out_all is not None:
        picked = out_all[pv.clamp(min=0)].masked_fill(skipped[..., None], float("nan"))  # [B, gh*gw, K]
        class_scores = picked.permute(0, 2, 1).reshape(batch, -1, gh, gw).float().cpu()  # [B, K, gh, gw]
    return scores, class_scores


@register
class FastCAAP(CAAP):
    """Fast CAAP: ``CAAP(mode="fast")``, the same options as ``caap``.

    Each patch group's own tokens are computed exactly, the other tokens to first order (docs/FAST.md): about
    four forward passes per image instead of one partial forward per patch. ``all_classes=True`` costs one
    backward pass per class.
    """

    name = "caap_fast"

    def __init__(self, model: nn.Module | Adapter, mode: str = "fast", **kwargs) -> None:
        super().__init__(model, mode=mode, **kwargs)


@register
class AdaptiveCAAP(CAAP):
    """The fast map, then exact CAAP for its top patches: ``CAAP(mode="fast", refine=0.08)``.

    On a 14×14 grid: the fast mode's ~4 forward passes, then 16 exact patched runs instead of 196. The top 8 %
    of the map is exact; the rest is the fast map. It replaced coarse-to-fine (``CAAP(refine=0.08)``, exact
    2×2 superpatches first), which it beats in rank agreement with exact CAAP (Spearman 0.999 vs 0.70), in
    deletion and insertion and in time on the 200 dev images (docs/FAST.md).
    """

    name = "caap_adaptive"

    def __init__(self, model: nn.Module | Adapter, mode: str = "fast", refine: float | None = 0.08,
                 **kwargs) -> None:
        super().__init__(model, mode=mode, refine=refine, **kwargs)
