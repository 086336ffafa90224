"""Turning whatever a dataset holds (bytes, a path, a Hub image dict, a PIL image) into RGB.

Decoding runs inside loader workers, so everything here is plain functions of
picklable arguments. Failures raise ``ImageDecodeError`` with a reason a user
can act on; the run machinery records it against the item id and moves on.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

#: Images above this many pixels are refused (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 178_956_970  # PIL's own default: 2 x 89_478_485


class ImageDecodeError(ValueError):
    """An item whose image cannot be turned into RGB pixels."""


def open_image(source: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``source`` and return a fully decoded RGB image.

    ``source`` is raw bytes, a filesystem path, a ``{"bytes": ..., "path": ...}``
    dict as stored by ``datasets.Image(decode=False)``, or a PIL image.
    """
    image = _open(source, max_pixels)
    try:
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as exc:  # truncated data surfaces on load()
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc


def _open(source: Any, max_pixels: int | None) -> Image.Image:
    if isinstance(source, Image.Image):
        check_pixels(source, max_pixels)
        return source
    if isinstance(source, dict):
        data, path = source.get("bytes"), source.get("path")
        if data is None and not path:
            raise ImageDecodeError("image record holds neither bytes nor a path")
        source = data if data is not None else path
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageDecodeError("empty image data (0 bytes)")
        stream: Any = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ImageDecodeError(f"file not found: {path}")
        if os.path.getsize(path) == 0:
            raise ImageDecodeError(f"empty file (0 bytes): {path}")
        stream = path
    else:
        raise ImageDecodeError(f"unsupported image source of type {type(source).__name__}")
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            check_pixels(image, max_pixels)
            image.load()
            # Phone photos store their rotation in EXIF; embed what a viewer shows.
            return ImageOps.exif_transpose(image)
    except ImageDecodeError:
        _close(image)
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        _close(image)
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        _close(image)
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc


def check_pixels(image: Image.Image, max_pixels: int | None) -> None:
    if max_pixels is not None and image.width * image.height > max_pixels:
        raise ImageDecodeError(
            f"image of {image.width}x{image.height} pixels exceeds the limit "
            f"of {max_pixels} pixels (tasks.max_image_pixels)"
        )


def _close(image: Image.Image | None) -> None:
    if image is not None:
        image.close()


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparent areas become white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        scaled = np.clip(array / high * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    return image.convert("RGB")


# Truncated JPEGs must fail loudly instead of being padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
