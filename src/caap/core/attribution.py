"""The result type shared by CAAP and every baseline."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from caap.errors import CaapError
from caap.io import atomic_write_bytes

_UPSAMPLE_MODES = ("bilinear", "bicubic", "nearest", "area")


@dataclass
class Attribution:
    """Attribution maps for a batch of images.

    Attributes:
        scores: float32 ``[B, h, w]`` on the CPU. For patch-level methods ``(h, w)`` is the patch grid
            ``(gh, gw)``; for pixel-level methods it is the input size ``(H, W)``. For CAAP,
            ``scores[b, i, j] = s(patched run)[c] - s(context run)[c]`` in the score's units (logits by
            default); positive means the patch's internal representation carries evidence for ``c``.
        target: int64 ``[B]``, the explained class of each image.
        input_size: ``(H, W)`` of the images that were explained, in pixels.
        method: registry name of the method that produced the maps.
        class_scores: optional float32 ``[B, C, h, w]`` with the map of every class (CAAP ``all_classes``).
        meta: settings and per-image extras (e.g. ``context_score``, ``source_score``: float32 ``[B]``).
    """

    scores: torch.Tensor
    target: torch.Tensor
    input_size: tuple[int, int]
    method: str = "caap"
    class_scores: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.scores, torch.Tensor) or self.scores.dim() != 3:
            raise CaapError(f"Attribution.scores must be [B, h, w], got {_shape(self.scores)}")
        if not self.scores.is_floating_point():
            raise CaapError(f"Attribution.scores must be floating point, got dtype {self.scores.dtype}")
        if not isinstance(self.target, torch.Tensor) or self.target.shape != (self.scores.shape[0],):
            raise CaapError(f"Attribution.target must be [B]={self.scores.shape[0]}, got {_shape(self.target)}")
        if self.target.is_floating_point() or self.target.dtype == torch.bool:
            raise CaapError(f"Attribution.target must hold integer class indices, got dtype {self.target.dtype}")
        size = self.input_size
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise CaapError(f"Attribution.input_size must be (H, W) positive ints, got {size!r}")
        if self.scores.shape[1] > size[0] or self.scores.shape[2] > size[1]:
            raise CaapError(f"Attribution maps of {tuple(self.scores.shape[1:])} cells cannot come from an input of "
                            f"{tuple(size)} pixels")
        if self.class_scores is not None and (
                not isinstance(self.class_scores, torch.Tensor) or self.class_scores.dim() != 4
                or self.class_scores.shape[0] != self.scores.shape[0]
                or self.class_scores.shape[2:] != self.scores.shape[1:]
                or not self.class_scores.is_floating_point()):
            raise CaapError(f"Attribution.class_scores must be float [B, C, h, w] with the maps' B, h, w "
                            f"{(self.scores.shape[0], *self.scores.shape[1:])}, got {_shape(self.class_scores)}")
        if not isinstance(self.method, str) or not isinstance(self.meta, dict):
            raise CaapError(f"Attribution.method must be a str and meta a dict, got {type(self.method).__name__} "
                            f"and {type(self.meta).__name__}")
        self.input_size = (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return self.scores.shape[0]

    def plot(self, index: int = 0, image=None, *, mode: str = "bilinear", clip: float | None = None,
             alpha: float | None = None, ax=None):
        """A ``matplotlib.figure.Figure`` of map ``index`` over ``image`` (optional: ``[H, W, 3]`` floats in
        [0, 1] or uint8, a PIL image, or a ``[3, H, W]`` tensor in [0, 1]) with its colour bar: diverging and
        centred at 0 for signed methods, sequential otherwise, opacity following ``|map|``, saturating at the
        ``clip`` percentile (default 99.5); ``mode="nearest"`` shows patch maps patch-exact. ``ax``: draw into
        an existing axes. No pyplot, no backend change."""
        import numpy as np
        from matplotlib.figure import Figure

        from caap.viz.heatmap import ALPHA, CLIP, draw

        if not -len(self) <= index < len(self):
            raise CaapError(f"index {index} is out of range for {len(self)} map(s)")
        picture = None
        if image is not None:
            picture = np.asarray(image.detach().cpu().permute(1, 2, 0) if isinstance(image, torch.Tensor) else image)
            if picture.ndim != 3 or picture.shape[2] != 3:
                raise CaapError(f"image must be [H, W, 3] (or a [3, H, W] tensor, a PIL image), got {picture.shape}")
            picture = picture / 255.0 if picture.dtype == np.uint8 else picture.astype(np.float64).clip(0, 1)
        fig = Figure(figsize=(4.2, 3.4), layout="constrained") if ax is None else ax.figure
        ax = fig.add_subplot() if ax is None else ax
        mappable = draw(ax, picture, self.scores[index], signed=bool(self.meta.get("signed", True)), mode=mode,
                        clip=CLIP if clip is None else clip, alpha=ALPHA if alpha is None else alpha,
                        size=self.input_size)
        fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
        ax.set_title(f"{self.method}, class {int(self.target[index])}", fontsize=9)
        return fig

    def _repr_png_(self) -> bytes:
        """The first map as a PNG, so a notebook shows an Attribution as a figure."""
        import io

        buf = io.BytesIO()
        self.plot(0).savefig(buf, format="png", dpi=80)
        return buf.getvalue()

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the native map."""
        return (self.scores.shape[1], self.scores.shape[2])

    def upsample(self, size: tuple[int, int] | int | None = None, mode: str = "bilinear") -> torch.Tensor:
        """Maps resized to ``size`` (default: the input size), float32 ``[B, H, W]``.

        ``mode`` is a ``torch.nn.functional.interpolate`` mode; ``"nearest"`` keeps patch blocks exact.
        """
        if mode not in _UPSAMPLE_MODES:
            raise CaapError(f"upsample mode {mode!r} is not one of {_UPSAMPLE_MODES}")
        if size is None:
            size = self.input_size
        elif isinstance(size, int):
            size = (size, size)
        maps = self.scores[:, None].float()  # [B, 1, h, w]
        if tuple(size) == self.grid:
            return maps[:, 0].clone()
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        return F.interpolate(maps, size=tuple(size), mode=mode, **kwargs)[:, 0]

    def to_pixels(self, mode: str = "bilinear") -> torch.Tensor:
        """Maps at input resolution as ``[B, 1, H, W]`` (the Captum / Quantus layout)."""
        return self.upsample(None, mode=mode)[:, None]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the maps to ``path`` (safetensors: tensors; JSON metadata: the rest), atomically.

        Tensors in ``meta`` are stored as tensors; other metadata must be JSON-serialisable. Load with
        :meth:`Attribution.load` (no pickle)."""
        from safetensors.torch import save

        tensors = {"scores": self.scores.contiguous(), "target": self.target.contiguous()}
        if self.class_scores is not None:
            tensors["class_scores"] = self.class_scores.contiguous()
        plain: dict[str, Any] = {}
        for key, value in self.meta.items():
            if isinstance(value, torch.Tensor):
                tensors[f"meta.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[key] = value
        try:
            header = json.dumps({"format": _FORMAT, "input_size": list(self.input_size), "method": self.method,
                                 "meta": plain})
        except TypeError as exc:
            raise CaapError(f"Attribution.save: metadata is not JSON-serialisable ({exc})") from None
        return atomic_write_bytes(path, save(tensors, metadata={"caap": header}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Attribution:
        """Read an :class:`Attribution` written by :meth:`save`."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise CaapError(f"attribution file {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = json.loads((f.metadata() or {}).get("caap", "null"))
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        except (SafetensorError, OSError, ValueError) as exc:
            raise CaapError(f"cannot read attribution file {str(path)!r} ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != _FORMAT:
            raise CaapError(f"{str(path)!r} is not a caap attribution file (no '{_FORMAT}' metadata)")
        for key, kind, what in (("meta", dict, "an object"), ("method", str, "a string"),
                                ("input_size", list, "[H, W]")):
            if not isinstance(header.get(key), kind):
                raise CaapError(f"{str(path)!r}: its header's {key!r} is {header.get(key)!r}, expected {what}")
        for key, dtype in (("scores", torch.float32), ("target", torch.int64)):
            if key not in tensors or tensors[key].dtype != dtype:
                got = tensors[key].dtype if key in tensors else "missing"
                raise CaapError(f"{str(path)!r}: tensor {key!r} is {got}, expected {dtype}")
        meta = {**header["meta"], **{k[5:]: v for k, v in tensors.items() if k.startswith("meta.")}}
        try:
            return cls(tensors["scores"], tensors["target"], tuple(header["input_size"]), header["method"],
                       tensors.get("class_scores"), meta)
        except CaapError as exc:
            raise CaapError(f"{str(path)!r} does not hold valid maps: {exc}") from None


_FORMAT = "caap.attribution/1"


def _shape(value) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
