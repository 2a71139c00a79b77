"""The adapter contract: the only place that knows a model's internals.

An adapter splits a ViT into ``embed`` (pixels -> input residual stream of block 0, ``z_0``), the blocks
``B_0 … B_{L-1}`` and ``head`` (final norm, pooling, classifier). Token layout of ``z_l`` is
``[prefix tokens ; patch tokens in row-major grid order]`` with shape ``[B, N, D]``,
``N = num_prefix + gh * gw``. ``adapter.forward(x)`` must reproduce ``model(x)``'s logits exactly.
"""

from __future__ import annotations

import copy
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from caap.adapters.card import ModelCard
from caap.core.contexts import Normalization
from caap.errors import CaapError, UnsupportedModelError


class Adapter(ABC):
    """A view of a ViT classifier as ``embed -> blocks -> head``: the core contract every method may use.

    Every fact about a model comes from an adapter: the three parts, the geometry, the head's modules, the
    input normalisation and the model's card (:class:`~caap.adapters.card.ModelCard`). What not every model can
    do — attention capture, block views, linear rules, speed paths — are capabilities an adapter declares by
    inheriting them (:mod:`caap.adapters.capabilities`); methods ask with ``require(adapter, Capability)``,
    which names what is missing in one line (:class:`~caap.errors.UnsupportedModelError`).

    Attributes:
        model: the wrapped module (adapters register hooks or change flags only inside context managers, which
            undo them on exit).
        num_prefix: number of prefix tokens (CLS, distillation, registers) before the patch tokens.
        normalization: the preprocessing mean/std the model expects (used by pixel-defined contexts).
        head_rows: token rows the head reads (e.g. ``(0,)`` for class-token pooling), or ``None`` when it
            reads every token (average pooling, attention pooling).
        tokens: the model is a ViT seen as ``embed -> blocks -> head`` (False: any classifier, for the
            model-agnostic methods only; :class:`~caap.adapters.classifier.ClassifierAdapter`).
        token_subsets: the blocks run on any subset of the patch tokens (False where each token carries its own
            rotary position embedding: token occlusion and TIS need this).
    """

    tokens: bool = True
    token_subsets: bool = True
    model: nn.Module
    num_prefix: int
    normalization: Normalization
    head_rows: tuple[int, ...] | None = None

    @functools.cached_property
    def card(self) -> ModelCard:
        """The model's card (classes, input size, per-method defaults), read once."""
        return self._read_card()

    def _read_card(self) -> ModelCard:
        return ModelCard()

    @property
    def num_classes(self) -> int | None:
        """The head's number of classes (the card's), for checking targets."""
        return self.card.num_classes

    def head_modules(self) -> list[nn.Module]:
        """The classifier's own modules (what a model-randomisation check re-draws first)."""
        raise self.unsupported("head_modules (the classifier's modules)")

    def _modules_named(self, names: Sequence[str]) -> list[nn.Module]:
        """The model's submodules among ``names`` (in that order), or an error naming them."""
        found = [getattr(self.model, n) for n in names if isinstance(getattr(self.model, n, None), nn.Module)]
        if not found:
            raise self.unsupported(f"head_modules (no {', '.join(names)} module)")
        return found

    def unsupported(self, capability: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"{type(self).__name__} for {type(self.model).__name__} has no {capability}")

    def with_normalization(self, normalization: Normalization) -> Adapter:
        """A copy of this adapter with another input normalisation (this one is left as it is)."""
        other = copy.copy(self)
        other.normalization = normalization
        return other

    @property
    @abstractmethod
    def blocks(self) -> Sequence[nn.Module]:
        """The transformer blocks in execution order."""

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @abstractmethod
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[B, 3, H, W]`` -> ``z_0`` ``[B, N, D]``."""

    def run_block(self, index: int, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """``z_{l+1} = B_l(z_l)``, ``[B, N, D] -> [B, N, D]``.

        ``grid`` is the patch grid ``(gh, gw)`` of the images ``z`` comes from: the one per-call fact a block may
        need beyond its input (rotary position embeddings, XCiT's local patch interaction). Callers that embedded
        the images pass it; ``None`` means the model's own input grid (:meth:`stream_grid`)."""
        out = self.blocks[index](z)
        return out[0] if isinstance(out, tuple) else out

    def stream_grid(self, z: torch.Tensor, grid: tuple[int, int] | None) -> tuple[int, int]:
        """The patch grid of the residual stream ``z`` ``[B, N, D]``: ``grid`` checked against ``N``, or, when
        ``None``, the grid of the model's own input size if its token count matches (an error otherwise)."""
        patches = z.shape[1] - self.num_prefix
        if grid is None:
            size = self.card.input_size
            if size is None or self.num_prefix + (own := self.grid(tuple(size)))[0] * own[1] != z.shape[1]:
                raise CaapError(f"{type(self.model).__name__}: a stream of {z.shape[1]} tokens is not the model's "
                                "own grid; pass grid=(gh, gw), the patch grid of the images embedded")
            return own
        gh, gw = (int(g) for g in grid)
        if gh * gw != patches:
            raise CaapError(f"grid {tuple(grid)} has {gh * gw} patches, the stream {patches} "
                            f"({z.shape[1]} tokens, {self.num_prefix} prefix)")
        return gh, gw

    @abstractmethod
    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Output of the last block ``[B, N, D]`` -> logits ``[B, C]``.

        When ``head_rows`` is ``(0, …, k-1)``, ``head`` also accepts just those rows ``[B, k, D]``."""

    @abstractmethod
    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Patch grid ``(gh, gw)`` for an input of ``(H, W)`` pixels."""

    @property
    def patch_size(self) -> tuple[int, int]:
        """Patch size ``(ph, pw)`` in pixels."""
        raise self.unsupported("patch_size (the patch size in pixels)")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The model's logits ``[B, C]``, computed through ``embed``, every block and ``head``."""
        z, grid = self.embed(images), self.grid((images.shape[2], images.shape[3]))
        for index in range(self.num_blocks):
            z = self.run_block(index, z, grid)
        return self.head(z)

    def check_input(self, images: torch.Tensor) -> tuple[int, int]:
        """Validate a batch of model inputs and return its patch grid."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise CaapError(f"images must be a float tensor [B, 3, H, W] (normalised), got {got}")
        if not images.is_floating_point():
            raise CaapError(f"images must be floating point (normalised model inputs), got {images.dtype}")
        if images.shape[0] == 0:
            raise CaapError("images is an empty batch [0, 3, H, W]; expected at least one image")
        finite = torch.isfinite(images).flatten(1).all(1)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            raise CaapError(f"image {bad} of the batch holds NaN or inf values; expected finite model inputs")
        return self.grid((images.shape[2], images.shape[3]))


class GenericAdapter(Adapter):
    """An adapter built from parts, for ViTs that no specific adapter knows.

    Args:
        model: the module (used for device, parameters and train/eval state).
        embed: ``[B, 3, H, W] -> [B, N, D]``, everything before block 0 (patch embedding, prefix tokens,
            position embedding, pre-norm).
        blocks: the transformer blocks; each maps ``[B, N, D] -> [B, N, D]`` (a tuple's first item is used).
        head: ``[B, N, D] -> [B, C]``, everything after the last block.
        num_prefix: number of non-patch tokens at the start of the sequence.
        grid: the patch grid ``(gh, gw)``, or a callable ``(H, W) -> (gh, gw)``.
        patch_size: patch size in pixels, ``int`` or ``(ph, pw)`` (optional; used for pixel maps).
        normalization: the model's input mean/std (default ImageNet).
        head_rows: token rows the head reads, or ``None`` for all.
        class_names: optional names of the classes; defaults: optional per-method defaults (model card).
        head_modules: optional classifier modules (for model randomisation).

    It has no capabilities beyond the core contract: methods that need attention capture, block views or linear
    rules raise :class:`~caap.errors.UnsupportedModelError` naming the capability.
    """

    def __init__(
        self,
        model: nn.Module,
        embed: Callable[[torch.Tensor], torch.Tensor],
        blocks: Sequence[nn.Module],
        head: Callable[[torch.Tensor], torch.Tensor],
        num_prefix: int,
        grid: tuple[int, int] | Callable[[tuple[int, int]], tuple[int, int]],
        patch_size: int | tuple[int, int] | None = None,
        normalization: Normalization | None = None,
        head_rows: tuple[int, ...] | None = None,
        class_names: Sequence[str] | None = None,
        defaults: dict[str, Any] | None = None,
        head_modules: Sequence[nn.Module] | None = None,
    ) -> None:
        if not callable(embed) or not callable(head):
            raise CaapError("GenericAdapter needs callables for embed and head")
        if len(blocks) == 0:
            raise CaapError("GenericAdapter needs at least one block")
        if not isinstance(num_prefix, int) or num_prefix < 0:
            raise CaapError(f"num_prefix must be a non-negative int, got {num_prefix!r}")
        self.model = model
        self._embed = embed
        self._blocks = list(blocks)
        self._head = head
        self.num_prefix = num_prefix
        self._grid = grid
        self._patch = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
        self.normalization = normalization or Normalization()
        self.head_rows = head_rows
        self._class_names = list(class_names) if class_names is not None else None
        self._defaults = dict(defaults or {})
        self._head_modules = list(head_modules) if head_modules is not None else None

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self._blocks

    def _read_card(self) -> ModelCard:
        size = None if callable(self._grid) or self._patch is None else (
            self._grid[0] * self._patch[0], self._grid[1] * self._patch[1])
        names = tuple(self._class_names) if self._class_names is not None else None
        return ModelCard(names, len(names) if names else None, size, dict(self._defaults))

    def head_modules(self) -> list[nn.Module]:
        if self._head_modules is None:
            raise self.unsupported("head_modules (pass head_modules= to GenericAdapter)")
        return list(self._head_modules)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self._embed(images)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self._head(z)

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        return tuple(self._grid(input_size)) if callable(self._grid) else tuple(self._grid)

    @property
    def patch_size(self) -> tuple[int, int]:
        if self._patch is None:
            raise self.unsupported("patch_size (pass patch_size= to GenericAdapter)")
        return self._patch
