"""The metric contract: configured in the constructor, called with data, one score per image."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, final

import torch
import torch.nn.functional as F

from caap.adapters import adapt
from caap.core.state import eval_mode, model_lock
from caap.errors import CaapError
from caap.registry import Registry


def to_grid(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Maps ``[B, h, w]`` on the patch grid ``[B, gh, gw]`` (pixel maps are averaged over each patch)."""
    if tuple(maps.shape[-2:]) == tuple(grid):
        return maps.float()
    h, w = maps.shape[-2:]
    if h % grid[0] or w % grid[1]:
        raise CaapError(f"map size {(h, w)} is not a multiple of the patch grid {grid}")
    return F.avg_pool2d(maps[:, None].float(), (h // grid[0], w // grid[1]))[:, 0]


def to_pixels(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps ``[B, h, w]`` at pixel resolution ``[B, H, W]`` (patch maps are repeated, no interpolation)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.float()
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="nearest")[:, 0]


def check_maps(maps: torch.Tensor, size: tuple[int, int], model=None) -> None:
    """The same check of maps ``[B, h, w]`` for every metric: finite values, and a resolution the images have —
    the input size ``size``, or the ViT's patch grid when the model is a ViT (any other classifier, or no model:
    a grid of cells that divides the input evenly)."""
    finite = torch.isfinite(maps.flatten(1)).all(1)
    if not bool(finite.all()):
        raise CaapError(f"the map of image {int((~finite).nonzero()[0, 0])} has NaN or infinite values; a metric "
                        "needs finite maps")
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return
    adapter = adapt(model) if model is not None else None
    if adapter is not None and adapter.tokens:
        grid = adapter.grid(size)
        if (h, w) != tuple(grid):
            raise CaapError(f"maps of {h}x{w} cells do not fit the model: expected its patch grid {grid[0]}x{grid[1]} "
                            f"or the input size {size[0]}x{size[1]}")
    elif size[0] % h or size[1] % w:
        raise CaapError(f"maps of {h}x{w} cells do not divide the input of {size[0]}x{size[1]} pixels evenly")


def tie_break(n: int, seed: int) -> torch.Tensor:
    """int64 ``[n]``: a seeded random rank of ``n`` items (a permutation), the order in which tied items are
    taken. The same for every image of every batch, so a score never depends on the batch."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def ranked(values: torch.Tensor, keys: torch.Tensor, descending: bool) -> torch.Tensor:
    """``values`` ``[B, n]`` sorted best first (highest first when ``descending``), ties in the order of the
    secondary ``keys`` ``[n]`` (ascending): the indices ``[B, n]``. Every method's ties are broken the same way,
    so a map with plateaus (a Grad-CAM map that is 80 % zeros) is not ordered in raster order."""
    by_key = torch.argsort(keys)  # [n]: items in tie-break order
    order = torch.argsort(values[:, by_key], dim=1, descending=descending, stable=True)
    return by_key[order]


def rank_curve(adapter, images: torch.Tensor, canvas: torch.Tensor, rank_px: torch.Tensor, counts: list[int],
               insert: bool, readout, targets, batch_size: int) -> torch.Tensor:
    """The readouts ``[B, len(counts)]`` of a deletion or insertion curve: after step ``k`` the pixels whose rank
    (``rank_px`` ``[B, H, W]``, 0 = changed first) is below ``counts[k]`` show the image on the ``canvas``
    (insertion) or the canvas in the image (deletion); ``readout(logits [n, C], targets [n]) -> [n]``. The
    composites of every image and step go through the model ``batch_size`` at a time, in eval mode."""
    device = images.device
    jobs = [(i, k) for i in range(images.shape[0]) for k in range(len(counts))]
    out = torch.empty(images.shape[0], len(counts))
    tgt = torch.as_tensor(targets, dtype=torch.int64).to(device)
    with eval_mode(adapter.model):
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            img = torch.tensor([i for i, _ in chunk], device=device)
            changed = torch.tensor([counts[k] for _, k in chunk], device=device)
            flip = (rank_px[img] < changed[:, None, None])[:, None]  # [n, 1, H, W]: pixels changed so far
            composite = torch.where(flip, images[img], canvas[img]) if insert else \
                torch.where(flip, canvas[img], images[img])
            values = readout(adapter.forward(composite), tgt[img]).float().cpu()
            for (i, k), v in zip(chunk, values, strict=True):
                out[i, k] = v
    return out


@dataclass(frozen=True)
class Scored:
    """What a metric gives a batch: ``values`` float32 ``[B]`` on the CPU and, for a curve metric, each image's
    curve (``curves[b] = {"x": [...], "y": [...]}``; None for other metrics)."""

    values: torch.Tensor
    curves: list[dict[str, list[float]]] | None = None


class Metric(ABC):
    """Base class. :meth:`score` owns the checks (and ``__call__`` is its values); subclasses implement
    :meth:`evaluate` on a batch and declare their metadata.

    Attributes:
        name: registry name.
        higher_is_better: the direction of a better explanation.
        needs_model: calls the model (faithfulness) or not (localisation, complexity).
        needs_masks: needs ground-truth masks ``[B, H, W]``.
        binary: one outcome per image, 0 or 1 (the pointing game): tables test it with the exact McNemar test
            instead of the bootstrap of the mean (:mod:`caap.bench.stats`).
        needs_explain: re-explains with the method that made the maps (the randomisation check): a runner
            gives it that method with :meth:`bind`.
    """

    name: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    needs_model: ClassVar[bool] = False
    needs_masks: ClassVar[bool] = False
    binary: ClassVar[bool] = False
    needs_explain: ClassVar[bool] = False

    def bind(self, explain) -> Metric:
        """This metric for maps made by ``explain(model, images, targets) -> maps`` (only a metric that
        ``needs_explain`` uses it; the others are returned as they are)."""
        return self

    @final
    def __call__(self, model, images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor,
                 masks: torch.Tensor | None = None) -> torch.Tensor:
        """Scores float32 ``[B]`` on the CPU (:meth:`score`'s values)."""
        return self.score(model, images, targets, maps, masks).values

    @final
    def score(self, model, images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor,
              masks: torch.Tensor | None = None) -> Scored:
        """:class:`Scored` for ``images [B, 3, H, W]``, ``targets [B]`` and ``maps`` as caap gives them, ``[B, h,
        w]``, or in Captum's / Quantus's layout, ``[B, 1, H, W]`` or ``[B, 3, H, W]`` (channels summed); tensors
        or numpy arrays. Every check happens here, and a metric that runs the model holds its lock."""
        maps = torch.as_tensor(maps)
        if maps.dim() == 4 and maps.shape[1] in (1, 3):
            maps = maps.sum(1)
        if maps.dim() != 3 or maps.shape[0] != images.shape[0]:
            raise CaapError(f"maps must be [B={images.shape[0]}, h, w], [B, 1, H, W] or [B, 3, H, W], "
                            f"got {tuple(maps.shape)}")
        check_maps(maps, tuple(images.shape[-2:]), model)
        if self.needs_masks:
            if masks is None:
                raise CaapError(f"metric {self.name!r} needs ground-truth masks")
            if tuple(masks.shape) != (images.shape[0], *images.shape[-2:]):
                raise CaapError(f"masks must be [B, H, W]={(images.shape[0], *images.shape[-2:])}, "
                                f"got {tuple(masks.shape)}")
        targets = torch.as_tensor(targets, dtype=torch.int64).reshape(-1)
        if targets.shape[0] != images.shape[0]:
            raise CaapError(f"targets must be [B={images.shape[0]}], got {tuple(targets.shape)}")
        classes = adapt(model).num_classes if self.needs_model else None
        if classes is not None and bool(((targets < 0) | (targets >= classes)).any()):
            bad = int(targets[(targets < 0) | (targets >= classes)][0])
            raise CaapError(f"target {bad} is out of range; expected a class index in 0..{classes - 1}")
        with model_lock(adapt(model).model) if self.needs_model else contextlib.nullcontext():
            return self._scored(model, images, targets, maps.detach().float().cpu(),
                                None if masks is None else masks.bool().cpu())

    def _scored(self, model, images, targets, maps, masks) -> Scored:
        return Scored(self.evaluate(model, images, targets, maps, masks).float().cpu())

    @abstractmethod
    def evaluate(self, model, images, targets, maps, masks) -> torch.Tensor: ...


class CurveMetric(Metric):
    """A metric read off a curve: :meth:`curve` gives the target score after each step of changing the image,
    :meth:`area` turns it into one value per image. The benchmark keeps the curve for its plots."""

    needs_model = True

    @abstractmethod
    def curve(self, model, images: torch.Tensor, targets: torch.Tensor,
              maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values [B, n], x [n])``."""

    @abstractmethod
    def area(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The metric's value ``[B]`` from a curve given by :meth:`curve`."""

    def evaluate(self, model, images, targets, maps, masks):
        return self.area(*self.curve(model, images, targets, maps))

    def _scored(self, model, images, targets, maps, masks) -> Scored:
        values, x = self.curve(model, images, targets, maps)
        curves = [{"x": x.tolist(), "y": row.tolist()} for row in values.float().cpu()]
        return Scored(self.area(values, x).float().cpu(), curves)


METRICS: Registry[Metric] = Registry("metric")
register = METRICS.register
