"""Controlled-evidence images: we know exactly which pixels carry the class.

Each image is a textured background with objects drawn on it, none overlapping:

* ``simple``: one *class glyph* (10 shapes, one per class, each filled with its own two-tone pattern) at a
  random position, scale and pair of colours.
* ``conjunction``: two *parts* placed apart; each class is one unordered pair of 5 parts (C(5,2) = 10),
  so every part occurs in 4 classes and only the pair identifies the class: evidence must be combined.

Every image also carries ``n_distractors`` objects from a separate set of shapes, drawn independently of
the class, so they carry no class information. The generator returns the exact binary masks of the
class-defining pixels (both parts for ``conjunction``) and of the distractors: objects are drawn without
anti-aliasing, so a mask pixel is exactly a pixel the object painted.

Generation is seeded and deterministic: sample ``i`` of ``SyntheticConfig(seed=s)`` depends only on
``(s, i)``, never on batching or on other samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

from caap.errors import CaapError

GLYPHS = ("disk", "square", "triangle", "plus", "cross", "ring", "diamond", "tee", "ell", "star")
# Each glyph is filled with its own two-tone pattern, so that every patch of the object carries evidence
# (a small ViT trained on CPU learns silhouettes alone far too slowly). Distractors are plain.
PATTERNS = ("hstripes", "vstripes", "diagonal", "antidiagonal", "checker", "solid", "dots", "hbands", "vbands",
            "grid")
DISTRACTORS = ("zigzag", "dots", "arc", "wave")
PARTS = ("disk", "square", "triangle", "plus", "ring")
PAIRS = tuple((a, b) for i, a in enumerate(PARTS) for b in PARTS[i + 1 :])  # 10 classes
VARIANTS = ("simple", "conjunction")


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the controlled-evidence benchmark.

    Attributes:
        variant: ``"simple"`` or ``"conjunction"``.
        image_size: side of the square image in pixels (a multiple of the model's patch size).
        n_distractors: distractor objects per image.
        object_size: ``(min, max)`` side in pixels of a class object (per part for ``conjunction``).
        distractor_size: ``(min, max)`` side in pixels of a distractor.
        min_part_distance: minimal centre distance in pixels of the two parts (``conjunction``).
        seed: base seed; sample ``i`` uses ``(seed, i)``.
    """

    variant: str = "simple"
    image_size: int = 64
    n_distractors: int = 3
    object_size: tuple[int, int] = (16, 24)
    distractor_size: tuple[int, int] = (9, 14)
    min_part_distance: float = 26.0
    seed: int = 0
    classes: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise CaapError(f"unknown synthetic variant {self.variant!r}; expected one of {VARIANTS}")
        if self.image_size < 32:
            raise CaapError(f"image_size {self.image_size} is too small; expected at least 32 pixels")
        names = GLYPHS if self.variant == "simple" else tuple(f"{a}+{b}" for a, b in PAIRS)
        object.__setattr__(self, "classes", names)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "classes"}


@dataclass
class Sample:
    """One generated image: ``image`` uint8 ``[H, W, 3]``, ``label``, ``mask`` bool ``[H, W]`` (class evidence),
    ``distractor_mask`` bool ``[H, W]``, the ``background`` it was drawn on and ``objects`` (name, box)."""

    image: np.ndarray
    label: int
    mask: np.ndarray
    distractor_mask: np.ndarray
    background: np.ndarray
    objects: list[tuple[str, tuple[int, int, int, int]]]


def _rng(seed: int, index: int, attempt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index, attempt]))


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured, noisy background: smooth colour blobs plus fine grain, uint8 ``[H, W, 3]``."""
    base = rng.uniform(70, 180, size=3)
    coarse = rng.normal(0, 18, size=(6, 6, 3))
    smooth = np.asarray(
        Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
        dtype=np.float64,
    ) - 128
    stripes = 7 * np.sin(
        2 * math.pi * (np.arange(size)[:, None] * rng.uniform(-0.15, 0.15) + np.arange(size)[None, :]
                       * rng.uniform(-0.15, 0.15)) + rng.uniform(0, 2 * math.pi)
    )
    grain = rng.normal(0, 6, size=(size, size, 3))
    return np.clip(base + smooth + stripes[..., None] + grain, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, bg_mean: np.ndarray) -> tuple[int, int, int]:
    for _ in range(100):
        c = rng.integers(0, 256, size=3)
        if np.abs(c - bg_mean).mean() > 70:
            return tuple(int(v) for v in c)
    return tuple(int(v) for v in (255 - bg_mean).clip(0, 255))


def draw_shape(draw: ImageDraw.ImageDraw, name: str, box: tuple[int, int, int, int], fill, rng) -> None:
    """Draw shape ``name`` inside ``box`` = (x0, y0, x1, y1) (inclusive) with colour ``fill`` (no anti-aliasing)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    t = max(2, round(min(w, h) / 4))  # stroke width of bar-like glyphs
    if name == "disk":
        draw.ellipse(box, fill=fill)
    elif name == "square":
        draw.rectangle(box, fill=fill)
    elif name == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif name == "plus":
        draw.rectangle((cx - t / 2, y0, cx + t / 2, y1), fill=fill)
        draw.rectangle((x0, cy - t / 2, x1, cy + t / 2), fill=fill)
    elif name == "cross":
        draw.line((x0, y0, x1, y1), fill=fill, width=t)
        draw.line((x0, y1, x1, y0), fill=fill, width=t)
    elif name == "ring":
        draw.ellipse(box, outline=fill, width=t)
    elif name == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif name == "tee":
        draw.rectangle((x0, y0, x1, y0 + t), fill=fill)
        draw.rectangle((cx - t / 2, y0, cx + t / 2, y1), fill=fill)
    elif name == "ell":
        draw.rectangle((x0, y0, x0 + t, y1), fill=fill)
        draw.rectangle((x0, y1 - t, x1, y1), fill=fill)
    elif name == "star":
        r_out, r_in = min(w, h) / 2, min(w, h) / 5
        pts = [(cx + (r_out if k % 2 == 0 else r_in) * math.sin(k * math.pi / 5),
                cy - (r_out if k % 2 == 0 else r_in) * math.cos(k * math.pi / 5)) for k in range(10)]
        draw.polygon(pts, fill=fill)
    elif name == "zigzag":
        n = 4
        pts = [(x0 + w * k / n, y0 if k % 2 == 0 else y1) for k in range(n + 1)]
        draw.line(pts, fill=fill, width=2)
    elif name == "dots":
        r = max(1, round(min(w, h) / 6))
        for k in range(3):
            px = x0 + r + (w - 2 * r) * k / 2
            draw.ellipse((px - r, cy - r, px + r, cy + r), fill=fill)
    elif name == "arc":
        draw.arc(box, start=200, end=340, fill=fill, width=2)
    elif name == "wave":
        pts = [(x0 + w * k / 12, cy + h / 2.5 * math.sin(k * math.pi / 3)) for k in range(13)]
        draw.line(pts, fill=fill, width=2)
    else:
        raise CaapError(f"unknown shape {name!r}")


def _second_colour(rng: np.random.Generator, colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """The pattern's second tone: the first one shifted by ±(70..110) in brightness."""
    c = np.array(colour, dtype=np.int64)
    shift = int(rng.integers(70, 111)) * (1 if c.mean() < 128 else -1)
    return tuple(int(v) for v in np.clip(c + shift, 0, 255))


def pattern_fill(pattern: str, box: tuple[int, int, int, int], size: int, first, second) -> np.ndarray:
    """A ``[size, size, 3]`` uint8 image of ``pattern`` in two tones.

    Periods (4 or 8 px) divide the 8 px patch, and the phase is locked to the image, so every patch of an
    object shows the pattern in the same phase: a ViT's linear patch embedding can read it directly.
    """
    y, x = np.mgrid[0:size, 0:size]
    on = {
        "hstripes": (y // 2) % 2 == 0,
        "vstripes": (x // 2) % 2 == 0,
        "diagonal": ((x + y) // 2) % 2 == 0,
        "antidiagonal": ((x - y) // 2) % 2 == 0,
        "checker": ((x // 2) + (y // 2)) % 2 == 0,
        "solid": np.ones_like(x, dtype=bool),
        "dots": ~((x % 4 < 2) & (y % 4 < 2)),
        "hbands": (y // 4) % 2 == 0,
        "vbands": (x // 4) % 2 == 0,
        "grid": ~((x % 4 == 0) | (y % 4 == 0)),
    }[pattern]
    return np.where(on[..., None], np.array(first, np.uint8), np.array(second, np.uint8))


def _place(rng, size: int, side: int, taken: list[tuple[int, int, int, int]], margin: int = 2,
           far_from: tuple[float, float] | None = None, min_dist: float = 0.0):
    """A random box of ``side`` pixels not overlapping ``taken`` (with ``margin``), or None."""
    for _ in range(200):
        x0 = int(rng.integers(1, size - side - 1))
        y0 = int(rng.integers(1, size - side - 1))
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        if any(not (box[2] + margin < b[0] or b[2] + margin < box[0] or box[3] + margin < b[1]
                    or b[3] + margin < box[1]) for b in taken):
            continue
        if far_from is not None and math.dist(far_from, (x0 + (side - 1) / 2, y0 + (side - 1) / 2)) < min_dist:
            continue
        return box
    return None


def generate(config: SyntheticConfig, index: int, label: int | None = None) -> Sample:
    """Sample ``index`` of the benchmark (label drawn uniformly unless given)."""
    for attempt in range(20):
        sample = _try_generate(config, _rng(config.seed, index, attempt), label)
        if sample is not None:
            return sample
    raise CaapError(f"could not place all objects on a {config.image_size}px image; use fewer or smaller objects")


def _try_generate(config: SyntheticConfig, rng: np.random.Generator, label: int | None) -> Sample | None:
    size = config.image_size
    y = int(rng.integers(config.num_classes)) if label is None else int(label)
    if not 0 <= y < config.num_classes:
        raise CaapError(f"label {y} is out of range; expected 0..{config.num_classes - 1}")
    bg = background(rng, size)
    bg_mean = bg.reshape(-1, 3).mean(0)
    img = Image.fromarray(bg)
    mask_img = Image.new("L", (size, size), 0)
    dist_img = Image.new("L", (size, size), 0)
    draw, mdraw, ddraw = ImageDraw.Draw(img), ImageDraw.Draw(mask_img), ImageDraw.Draw(dist_img)
    taken: list[tuple[int, int, int, int]] = []
    objects = []
    lo, hi = config.object_size
    if config.variant == "simple":
        shapes = [GLYPHS[y]]
    else:
        shapes = list(PAIRS[y])
        rng.shuffle(shapes)
        lo, hi = max(8, lo - 2), max(9, hi - 4)
    first_centre = None
    for k, shape in enumerate(shapes):
        side = int(rng.integers(lo, hi + 1))
        box = _place(rng, size, side, taken, far_from=first_centre if k else None,
                     min_dist=config.min_part_distance if k else 0.0)
        if box is None:
            return None
        first_centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        colour = _colour(rng, bg_mean)
        second = _second_colour(rng, colour)
        shape_mask = Image.new("L", (size, size), 0)
        draw_shape(ImageDraw.Draw(shape_mask), shape, box, 255, rng)
        fill = pattern_fill(PATTERNS[GLYPHS.index(shape)], box, size, colour, second)  # [H, W, 3]
        img.paste(Image.fromarray(fill), (0, 0), shape_mask)
        draw_shape(mdraw, shape, box, 255, rng)
        taken.append(box)
        objects.append((shape, box))
    dlo, dhi = config.distractor_size
    for _ in range(config.n_distractors):
        shape = DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]
        side = int(rng.integers(dlo, dhi + 1))
        box = _place(rng, size, side, taken)
        if box is None:
            return None
        colour = _colour(rng, bg_mean)
        draw_shape(draw, shape, box, colour, rng)
        draw_shape(ddraw, shape, box, 255, rng)
        taken.append(box)
        objects.append((shape, box))
    return Sample(np.asarray(img).copy(), y, np.asarray(mask_img) > 0, np.asarray(dist_img) > 0, bg, objects)


def generate_batch(config: SyntheticConfig, start: int, count: int, balanced: bool = False) -> dict[str, torch.Tensor]:
    """Samples ``start .. start+count-1`` as tensors.

    Returns ``images`` uint8 ``[B, 3, H, W]``, ``labels`` int64 ``[B]``, ``masks`` bool ``[B, H, W]``,
    ``distractor_masks`` bool ``[B, H, W]``. With ``balanced`` the label of sample ``i`` is ``i % C``.
    """
    samples = [generate(config, i, label=(i % config.num_classes) if balanced else None)
               for i in range(start, start + count)]
    return {
        "images": torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous(),
        "labels": torch.tensor([s.label for s in samples], dtype=torch.int64),
        "masks": torch.from_numpy(np.stack([s.mask for s in samples])),
        "distractor_masks": torch.from_numpy(np.stack([s.distractor_mask for s in samples])),
    }


def remove_objects(sample: Sample, which: str) -> np.ndarray:
    """The sample's image with the class object(s) (``which="class"``) or the distractors
    (``which="distractors"``) replaced by the image's own background, uint8 ``[H, W, 3]``."""
    if which not in ("class", "distractors"):
        raise CaapError(f"which must be 'class' or 'distractors', got {which!r}")
    drop = sample.mask if which == "class" else sample.distractor_mask
    out = sample.image.copy()
    out[drop] = sample.background[drop]
    return out
