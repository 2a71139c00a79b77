"""The grid pointing game on real images (Böhle, Fritz & Schiele, CVPR 2022; Rao, Böhle & Schiele, CVPR 2022):
2 × 2 grids of four images of four different classes, each cell the image downscaled to half the side (a quarter
of the input); explaining one cell's class, a faithful map puts its positive attribution in that cell.

Only cells the model classifies correctly and confidently *at that scale* enter a grid: the downscaled image,
brought back to the input size, must get its label as the top-1 class with probability at least ``threshold``.
The eligible images are shuffled with ``seed`` and dealt into grids greedily (the next image whose class is not
yet in the grid); every grid gives four items, one per cell, with the cell's class as the label and the cell as
the mask. Built from any labelled image folder; deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from caap.data.datasets import ImageFolder, Item
from caap.errors import CaapError

CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, column) of the four cells, row-major


def downscale(image: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` -> ``[3, H/2, W/2]`` (bilinear with antialias, in the normalised space)."""
    h, w = image.shape[-2:]
    if h % 2 or w % 2:
        raise CaapError(f"grid cells need an even input size, got {(h, w)}")
    return F.interpolate(image[None], size=(h // 2, w // 2), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def compose(cells: list[torch.Tensor]) -> torch.Tensor:
    """Four ``[3, h, w]`` cells -> the ``[3, 2h, 2w]`` grid (row-major: top left, top right, bottom left, …)."""
    top, bottom = torch.cat(cells[:2], dim=2), torch.cat(cells[2:], dim=2)
    return torch.cat([top, bottom], dim=1)


def cell_mask(size: tuple[int, int], cell: int) -> torch.Tensor:
    """bool ``[H, W]``: the pixels of cell ``cell`` (0..3, row-major) of a 2 × 2 grid of input size ``size``."""
    h, w = size
    row, col = CELLS[cell]
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[row * (h // 2):(row + 1) * (h // 2), col * (w // 2):(col + 1) * (w // 2)] = True
    return mask


class GridPointing:
    """Grid-pointing-game items from an image folder (see the module docstring).

    Args:
        folder: a labelled :class:`~caap.data.datasets.ImageFolder` (labels from WordNet ids or a labels file).
        classify: normalised images ``[n, 3, H, W]`` -> class probabilities ``[n, C]`` (the model's softmax).
        threshold: the least top-1 probability of a kept cell (default 0.5).
        seed: the shuffle that deals the images into grids.
        batch_size: images per classification forward.
    """

    has_masks = True

    def __init__(self, folder: ImageFolder, classify: Callable[[torch.Tensor], torch.Tensor], threshold: float = 0.5,
                 seed: int = 0, batch_size: int = 16) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            raise CaapError(f"grid threshold must be a probability in [0, 1), got {threshold!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise CaapError(f"grid seed must be an int, got {seed!r}")
        self.folder, self.threshold, self.seed = folder, float(threshold), seed
        labels = [folder.label(p) for p in folder.files]
        classes = len(set(labels))
        if classes < len(CELLS):
            raise CaapError(f"the grid pointing game needs images of at least {len(CELLS)} classes (one per cell); "
                            f"{str(folder.root)!r} has {len(labels)} image(s) of {classes} class(es)")
        self.eligible = self._confident(classify, labels, batch_size)  # indices into folder.files
        order = torch.randperm(len(self.eligible), generator=torch.Generator().manual_seed(seed)).tolist()
        self.grids = self._deal([self.eligible[i] for i in order], labels)
        self.labels = labels
        if not self.grids:
            kept = len({labels[i] for i in self.eligible})
            raise CaapError(f"no grid of {len(CELLS)} classes can be built: {len(self.eligible)} of {len(labels)} "
                            f"images are classified right with probability >= {self.threshold} at the cell's scale, "
                            f"of {kept} class(es); lower the threshold (grid:DIR:threshold=P) or add images")

    def _confident(self, classify, labels: list[int], batch_size: int) -> list[int]:
        kept = []
        for start in range(0, len(labels), batch_size):
            idx = list(range(start, min(start + batch_size, len(labels))))
            images = torch.stack([self.folder[i].image for i in idx])
            size = images.shape[-2:]
            cells = torch.stack([downscale(im) for im in images])
            seen = F.interpolate(cells, size=tuple(size), mode="bilinear", align_corners=False)  # the cell's scale
            with torch.inference_mode():
                probs = classify(seen).float()
            p, top = probs.max(1)
            kept += [i for i, t, q in zip(idx, top.tolist(), p.tolist(), strict=True)
                     if t == labels[i] and q >= self.threshold]
        return kept

    @staticmethod
    def _deal(order: list[int], labels: list[int]) -> list[tuple[int, int, int, int]]:
        grids, pending = [], list(order)
        while True:
            grid: list[int] = []
            for i in list(pending):
                if labels[i] not in {labels[j] for j in grid}:
                    grid.append(i)
                    pending.remove(i)
                    if len(grid) == 4:
                        break
            if len(grid) < 4:
                return grids
            grids.append(tuple(grid))

    def __len__(self) -> int:
        return 4 * len(self.grids)

    def __getitem__(self, i: int) -> Item:
        grid, cell = divmod(i, 4)
        members = self.grids[grid]
        image = compose([downscale(self.folder[j].image) for j in members])
        return Item(f"grid{grid:04d}_cell{cell}", image, self.labels[members[cell]],
                    cell_mask(tuple(image.shape[-2:]), cell))

    def describe(self) -> dict:
        """What was built: images, eligible cells, grids, the threshold and the seed."""
        return {"images": len(self.folder), "eligible": len(self.eligible), "grids": len(self.grids),
                "items": len(self), "threshold": self.threshold, "seed": self.seed}
