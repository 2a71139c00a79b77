"""Reading image files into RGB, with clear errors for anything that is not a usable image."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from caap.errors import CaapError

MAX_PIXELS = 64 * 10**6


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an 8-bit RGB PIL image.

    Grey, palette, CMYK, YCbCr and LAB images are converted to RGB; transparent images (RGBA, LA, palette
    with transparency) are composited on white; 16-bit and 32-bit grey images are rescaled to 8 bits; the
    EXIF orientation is applied. Anything else raises :class:`CaapError` naming the file, and so does an
    image of more than ``MAX_PIXELS`` (64 megapixels: decoding one takes several GB; a ViT sees 224 px).
    """
    path = Path(path)
    if not path.exists():
        raise CaapError(f"image {str(path)!r} does not exist")
    if path.is_dir():
        raise CaapError(f"image {str(path)!r} is a folder, expected an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            img = Image.open(path)
        with img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise CaapError(too_large(path, width * height))
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except CaapError:
        raise
    except Image.DecompressionBombError:
        raise CaapError(too_large(path, None)) from None
    except UnidentifiedImageError:
        raise CaapError(f"{str(path)!r} is not an image file that Pillow can read (expected PNG, JPEG, …)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CaapError(f"image {str(path)!r} is corrupt or truncated ({exc})") from None


def too_large(path: Path, pixels: int | None) -> str:
    size = f"{pixels / 10**6:.0f} megapixels" if pixels else f"over {2 * Image.MAX_IMAGE_PIXELS / 10**6:.0f} megapixels"
    return (f"image {str(path)!r} is too large ({size}; limit {MAX_PIXELS // 10**6} megapixels: decoding it takes "
            "gigabytes and a ViT sees a few hundred pixels); downscale it first")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see :func:`load_image`)."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            top = 1.0 if arr.max(initial=0) <= 1.0 else arr.max()
        else:
            top = 65535.0 if arr.max(initial=0) <= 65535 else float(2**32 - 1)
        arr = np.clip(arr / top, 0, 1) * 255
        return Image.fromarray(np.round(arr).astype(np.uint8), mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError):
        raise CaapError(f"image mode {mode!r} cannot be converted to RGB") from None
