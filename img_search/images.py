"""Turning whatever a dataset holds (bytes, a path, a Hub image dict, a PIL image) into RGB.

Decoding runs inside loader workers, so everything here is plain functions of
picklable arguments. Failures raise ``ImageDecodeError`` with a reason a user
can act on; the run machinery records it against the item id and moves on.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

#: Images above this many pixels are refused (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 178_956_970  # PIL's own default: 2 x 89_478_485

#: ``(width, height)`` of an image → the size a model's preprocessing resizes it to (or None).
ResizeTarget = Callable[[int, int], "tuple[int, int] | None"]


class ImageDecodeError(ValueError):
    """An item whose image cannot be turned into RGB pixels."""


@dataclass(frozen=True)
class Unreadable:
    """The source of an item whose bytes its dataset could not read; ``open_image`` raises its reason."""

    reason: str


class ItemUnreadable(ImageDecodeError):
    """The dataset could not read the item's bytes (a tar that changed since it was listed)."""


class ImageTooLarge(ImageDecodeError):
    """Refused from its header: the image, or the size its preprocessing resizes it to, is over ``limit``."""

    def __init__(
        self, size: tuple[int, int], limit: int, target: tuple[int, int] | None = None
    ) -> None:
        self.size, self.limit, self.target = size, limit, target
        (width, height), setting = size, "(tasks.max_image_pixels)"
        if target is None:
            message = f"image of {width}x{height} pixels exceeds the limit of {limit} pixels"
        else:
            message = (
                f"image of {width}x{height} pixels would be resized to {target[0]}x{target[1]} "
                f"by the model's preprocessing, over the limit of {limit} pixels"
            )
        super().__init__(f"{message} {setting}")


def open_image(
    source: Any,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    resize_to: ResizeTarget | None = None,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Open ``source`` and return a fully decoded RGB image.

    ``source`` is raw bytes, a filesystem path, a ``{"bytes": ..., "path": ...}``
    dict as stored by ``datasets.Image(decode=False)``, or a PIL image.

    Sizes are checked from the header, before a pixel is decoded: the image
    itself, and the size ``resize_to`` says the model's preprocessing will
    resize it to, must both fit in ``max_pixels``. A 117 KB PNG strip of
    2,500,000 x 16 pixels is small, but a shorter-side resize to 224 would
    ask for 35,000,000 x 224 pixels (about 41 GB on the way through).
    ``draft`` (a JPEG only) lets the decoder scale by 1/2 to 1/8 while it
    decodes, keeping at least that size: for thumbnails, not for vectors.
    """
    image = _open(source, max_pixels, resize_to, draft)
    try:
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as exc:  # truncated data surfaces on load()
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc


def _open(
    source: Any,
    max_pixels: int | None,
    resize_to: ResizeTarget | None,
    draft: tuple[int, int] | None,
) -> Image.Image:
    if isinstance(source, Image.Image):
        check_pixels(source, max_pixels, resize_to)
        return source
    if isinstance(source, Unreadable):
        raise ItemUnreadable(source.reason)
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
        image = Image.open(stream)
        check_pixels(image, max_pixels, resize_to)
        if draft is not None and image.format == "JPEG":
            image.draft("RGB", draft)
        image.load()
        # Phone photos store their rotation in EXIF; embed what a viewer shows.
        return ImageOps.exif_transpose(image)
    except ImageDecodeError:
        _close(image)
        raise
    except MemoryError as exc:
        _close(image)
        raise ImageDecodeError(f"out of memory decoding a {_size(image)} image") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        _close(image)
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc


def check_pixels(
    image: Image.Image, max_pixels: int | None, resize_to: ResizeTarget | None = None
) -> None:
    """Refuse, from the header alone, an image that is or would be resized to too many pixels."""
    if max_pixels is None:
        return
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(image.size, max_pixels)
    target = resize_to(width, height) if resize_to is not None else None
    if target is not None and target[0] * target[1] > max_pixels:
        raise ImageTooLarge(image.size, max_pixels, target)


def _size(image: Image.Image | None) -> str:
    return "?" if image is None else f"{image.width}x{image.height}"


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
# ``check_pixels`` applies the configured limit (tasks.max_image_pixels, in both directions)
# before decoding; Pillow's own fixed limit would otherwise refuse what the user allowed.
Image.MAX_IMAGE_PIXELS = None
