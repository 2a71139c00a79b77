"""Datasets for the benchmark runner: an image folder with ImageNet labels (and optional masks), or the
controlled-evidence generator. Items are ``(id, image [3, H, W] normalised, label, mask [H, W] | None)``."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from caap.adapters.demo import normalize_uint8
from caap.data.images import load_image
from caap.data.synthetic import SyntheticConfig, generate_batch
from caap.errors import CaapError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
OUTPUT_MARK = ".caap"  # caap explain writes <stem>.caap.png: its own outputs, never read back as inputs


def image_files(root: Path) -> list[Path]:
    """Every image under the folder ``root`` (sorted), except caap's own outputs (``<stem>.caap.<ext>``, so that
    ``caap explain DIR --out DIR`` run twice does not explain its first run's figures). A subfolder that cannot be
    read is an error naming it, not silently skipped."""
    def refuse(error: OSError) -> None:
        raise CaapError(f"cannot read the folder {str(error.filename)!r} under {str(root)!r} "
                        f"({error.strerror or error}); fix its permissions or leave it out")

    found = []
    for folder, _, names in os.walk(root, onerror=refuse):
        for name in names:
            path = Path(folder) / name
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.stem.endswith(OUTPUT_MARK):
                found.append(path)
    return sorted(found)


def expand_image_paths(items: list[str]) -> list[Path]:
    """Image files, each folder among ``items`` replaced by every image under it (:func:`image_files`, sorted);
    a folder without images is an error naming it."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = [p for p in image_files(path) if p.is_file()]
            if not found:
                raise CaapError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under the folder {item!r}")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


_WNID = re.compile(r"n\d{8}")


class Dataset(Protocol):
    """What the benchmark runner reads: items by index, their count, and whether they carry ground-truth masks."""

    has_masks: bool

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Item: ...


@dataclass
class Item:
    id: str
    image: torch.Tensor  # [3, H, W], normalised
    label: int
    mask: torch.Tensor | None  # bool [H, W]


class ImageFolder:
    """Images under ``root`` (sorted), labelled by a labels file or by the ImageNet WordNet id in the file or
    folder name.

    ``masks``: an optional folder with ``<stem>.png`` per image (non-zero = object), resized like the image
    (nearest). ``transform``: the model's preprocessing (PIL -> normalised tensor). ``labels``: an optional
    CSV file of ``file,class`` rows (``file`` relative to ``root``, ``class`` an index). ``need_labels``:
    without it, an image with no label gets ``-1`` instead of an error (runs that explain predictions).
    """

    def __init__(self, root: str | Path, transform: Callable, masks: str | Path | None = None,
                 labels: str | Path | None = None, need_labels: bool = True) -> None:
        from timm.data import ImageNetInfo

        self.root = Path(root)
        if not self.root.is_dir():
            raise CaapError(f"dataset folder {str(root)!r} does not exist")
        files = image_files(self.root)
        if not files:
            raise CaapError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(root)!r}")
        self.files = files
        names = ImageNetInfo().label_names()
        self._index = {wnid: i for i, wnid in enumerate(names)}
        self.transform = transform
        self.masks = Path(masks) if masks else None
        if self.masks is not None and not self.masks.is_dir():
            raise CaapError(f"masks folder {str(masks)!r} does not exist")
        self.need_labels = need_labels
        self._table = read_labels(labels) if labels else None
        if need_labels:
            for path in self.files:  # every label checked before any work
                self.label(path)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def has_masks(self) -> bool:
        """Whether ground-truth masks come with the images (a masks folder was given)."""
        return self.masks is not None

    def label(self, path: Path) -> int:
        if self._table is not None:
            key = path.relative_to(self.root).as_posix()
            if key in self._table:
                return self._table[key]
            if self.need_labels:
                raise CaapError(f"the labels file has no row for {key!r}")
            return -1
        for text in (path.name, path.parent.name):
            match = _WNID.search(text)
            if match and match.group() in self._index:
                return self._index[match.group()]
        if not self.need_labels:
            return -1
        raise CaapError(f"no ImageNet WordNet id (nXXXXXXXX) in {str(path)!r} or its folder name; give a "
                        "labels file (labels: a CSV of file,class rows) or let the target be the prediction")

    def __getitem__(self, i: int) -> Item:
        path = self.files[i]
        image = self.transform(load_image(path))
        mask = None
        if self.masks is not None:
            mpath = self.masks / f"{path.stem}.png"
            if mpath.is_file():
                m = Image.open(mpath).convert("L").resize(image.shape[-1:-3:-1], Image.NEAREST)
                mask = torch.from_numpy(np.asarray(m) > 0)
        return Item(str(path.relative_to(self.root)), image, self.label(path), mask)


class Synthetic:
    """The controlled-evidence benchmark with exact masks (``caap.data.synthetic``)."""

    def __init__(self, variant: str = "simple", size: int = 200, seed: int = 3_000_017) -> None:
        self.config = SyntheticConfig(variant=variant, seed=seed)
        self.size = size

    def __len__(self) -> int:
        return self.size

    has_masks = True  # the generator knows every class pixel

    def __getitem__(self, i: int) -> Item:
        b = generate_batch(self.config, i, 1)
        return Item(f"{self.config.variant}_{i:05d}", normalize_uint8(b["images"])[0], int(b["labels"][0]),
                    b["masks"][0])


class Subset:
    """The items of ``dataset`` at ``indices`` (e.g. ``range(0, n, every)[:limit]``), re-indexed from 0."""

    def __init__(self, dataset, indices: range | list[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def has_masks(self) -> bool:
        return bool(getattr(self.dataset, "has_masks", False))

    def __getitem__(self, i: int) -> Item:
        return self.dataset[self.indices[i]]


def read_labels(path: str | Path) -> dict[str, int]:
    """A ``file,class`` CSV (an optional header row ``file,class``) as ``{file: class index}``."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise CaapError(f"labels file {str(path)!r} does not exist")
    table: dict[str, int] = {}
    with open(path, newline="") as handle:
        for n, row in enumerate(csv.reader(handle), 1):
            if not row or (n == 1 and [c.strip().lower() for c in row] == ["file", "class"]):
                continue
            if len(row) != 2:
                raise CaapError(f"labels file {str(path)!r}, line {n}: expected file,class, got {row!r}")
            try:
                value = int(row[1])
            except ValueError:
                raise CaapError(f"labels file {str(path)!r}, line {n}: class {row[1]!r} is not an index") from None
            if value < 0:
                raise CaapError(f"labels file {str(path)!r}, line {n}: class {value} is negative")
            table[row[0].strip()] = value
    return table
