"""Turning a request into a query vector: uploads decoded a few at a time, one forward pass at a time.

A decoded image costs far more memory than its file (a 30 MP PNG of a few
hundred kB is 120 MB of pixels), so decodes are bounded by a semaphore sized
to the cores, and the memory is handed back to the system afterwards: glibc
otherwise keeps freed decode buffers in its per-thread arenas for good.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import threading
from collections.abc import Iterator

import numpy as np
from fastapi import HTTPException
from PIL import Image

from img_search.embedding import Encoder
from img_search.embedding.encode import ItemFailure
from img_search.host import usable_cores
from img_search.images import ImageDecodeError, ImageTooLarge, ResizeTarget, open_image

#: What an upload may be (Pillow would also open EPS, which runs Ghostscript).
UPLOAD_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
OUT_OF_MEMORY = "the image needs more memory to process than this server has"


def _malloc_trim() -> ctypes._CFuncPtr | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Return freed heap pages to the system (glibc only; elsewhere a no-op)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


class DecodeSlots:
    """At most ``slots`` images decoded at once; the memory they used is handed back after each."""

    def __init__(self, slots: int | None = None) -> None:
        self.slots = slots or usable_cores()
        self._semaphore = threading.BoundedSemaphore(self.slots)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Decode inside; let the decoded image go before leaving (return a vector or bytes)."""
        with self._semaphore:
            try:
                yield
            finally:
                release_memory()


class QueryEncoder:
    """Query text or uploaded image → vector, with the server's limits.

    One forward pass runs at a time (the model already uses every core), and
    an upload holds a decode slot from its decode to its vector, so no more
    than ``slots`` decoded images exist at once whatever the number of requests.
    """

    def __init__(self, max_pixels: int, slots: DecodeSlots | None = None) -> None:
        self.max_pixels = max_pixels
        self.slots = slots or DecodeSlots()
        self.lock = threading.Lock()

    def text(self, encoder: Encoder, text: str) -> np.ndarray:
        with self.lock:
            return encoder.encode([text], side="text").vectors[0]

    def image(self, encoder: Encoder, data: bytes) -> np.ndarray:
        """The vector of an uploaded file, or 413 (too large) / 422 (not a readable image)."""
        with self.slots.hold():
            return self._image(encoder, data)

    def _image(self, encoder: Encoder, data: bytes) -> np.ndarray:
        image = decode_upload(data, self.max_pixels, encoder.image_transform().resize_target)
        try:
            with self.lock:
                return encoder.encode([image], side="image", max_pixels=self.max_pixels).vectors[0]
        except ItemFailure as failure:  # the decoded image, refused by its preprocessing
            if isinstance(failure.cause, ImageDecodeError):  # the size it would reach
                raise HTTPException(413, f"the image cannot be searched: {failure.cause}") from None
            if isinstance(failure.cause, MemoryError):
                raise HTTPException(413, OUT_OF_MEMORY) from None
            raise
        except MemoryError:  # the forward pass
            raise HTTPException(413, OUT_OF_MEMORY) from None


def decode_upload(
    data: bytes, max_pixels: int, resize_to: ResizeTarget | None = None
) -> Image.Image:
    """An uploaded image, or 413 (too many pixels) / 422 (not an image).

    Sizes are checked from the header, before any pixel is decoded: the
    image's own, and the size ``resize_to`` (the model's preprocessing) would
    resize it to, which for a long thin strip is far larger.
    """
    if not data:
        raise HTTPException(422, "the upload is empty")
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS):
            pass  # the header only: a format this server reads (never EPS, which runs Ghostscript)
    except Exception:
        raise HTTPException(422, "the upload is not an image this server can read") from None
    try:
        return open_image(data, max_pixels=max_pixels, resize_to=resize_to)
    except ImageTooLarge as exc:
        raise HTTPException(413, too_large(exc)) from None
    except ImageDecodeError as exc:
        raise HTTPException(422, f"the upload is not a readable image: {exc}") from None


def too_large(exc: ImageTooLarge) -> str:
    """``open_image``'s refusal in the server's words (its limit is ``max_upload_pixels``)."""
    width, height = exc.size
    if exc.target is None:
        return f"the image has {width}x{height} pixels, more than the limit of {exc.limit}"
    return (
        f"the image of {width}x{height} pixels would be resized to "
        f"{exc.target[0]}x{exc.target[1]} pixels for this model, more than the limit of {exc.limit}"
    )
