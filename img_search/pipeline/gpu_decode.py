"""``tasks.decode=gpu``: JPEGs decoded, resized and normalised on the model's device, in batches.

On 16 cores at 300-400 images/s a core, decoding in loader workers tops out
near 6,000 images/s, below what a ViT-B/32 embeds on one H100. With
``tasks.decode=gpu`` a loader worker only reads an item's bytes and checks
its JPEG header (``JpegOrDecode``: the pixel limit, colour, orientation); the
main process decodes the batch's JPEGs with ``torchvision.io.decode_jpeg`` on
the encoder's device and runs the encoder's preprocessing there
(``embedding.device_preprocess``), just before the forward pass
(``decode_on_device``, called by ``embed_pass.forward``).

Everything else takes the CPU path, the default's own code: an image that is
not a JPEG (or is CMYK, or rotated by its EXIF), any image of a model whose
preprocessing cannot run on the device (jina-v4's), and a JPEG the device
fails to decode, which is then decoded by PIL in the main process.
An item that fails there too is an error row with the CPU path's reason:
every item ends as a row or an error, as with ``tasks.decode=cpu``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("img_search")


@dataclass
class DeviceJpeg:
    """A JPEG's bytes, to be decoded on the model's device (what a worker hands on)."""

    data: torch.Tensor  # uint8, the file's bytes


@dataclass
class DeviceBatch:
    """A collated batch whose JPEGs are still bytes: ``slots`` give each part's places in the batch.

    The JPEGs travel as one tensor (a loader worker hands a tensor over in a shared-memory
    segment of its own: one per batch, not one per image, which 16 workers would count in
    thousands of open files).
    """

    data: torch.Tensor  # uint8: the JPEGs' bytes, one after the other
    sizes: list[int]
    jpeg_slots: list[int]
    cpu: Any = None  # the encoder's own collate of the CPU-path items (None if none)
    cpu_slots: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.jpeg_slots) + len(self.cpu_slots)

    def jpegs(self) -> list[torch.Tensor]:
        return list(torch.split(self.data, self.sizes))


class JpegOrDecode:
    """Loader-worker step of ``tasks.decode=gpu``: a JPEG the device can take is passed on as its
    bytes (checked from its header only); anything else goes through ``cpu_step``, the default's."""

    def __init__(self, cpu_step: Callable[[Any], Any], max_pixels: int | None, resize_to: Any):
        self.cpu_step, self.max_pixels, self.resize_to = cpu_step, max_pixels, resize_to

    def __call__(self, item: Any) -> Any:
        data = _jpeg_bytes(item.source)
        if data is None or not self._fits(data):
            return self.cpu_step(item)
        return DeviceJpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))

    def _fits(self, data: bytes) -> bool:
        """A baseline-coloured, unrotated JPEG within the pixel limit (``ImageTooLarge`` raises, as on
        the CPU path); the header is read, no pixel is decoded."""
        from PIL import Image, UnidentifiedImageError

        from img_search.images import ImageTooLarge, check_pixels

        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                    return False
                check_pixels(image, self.max_pixels, self.resize_to)
                return image.getexif().get(0x0112, 1) == 1  # EXIF orientation: as stored
        except ImageTooLarge:
            raise  # an error row, as on the CPU path
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError):
            return False  # the CPU path says what is wrong with it


def _jpeg_bytes(source: Any) -> bytes | None:
    """The bytes of a source held as bytes or a file, when they start as a JPEG does."""
    if isinstance(source, dict):
        source = source.get("bytes") if source.get("bytes") is not None else source.get("path")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
        with open(source, "rb") as file:
            data = file.read()
    else:
        return None
    return data if data[:3] == b"\xff\xd8\xff" else None


def jpegs_to_device(cpu_step: Any, transform: Any, max_pixels: int | None, model: str) -> Any:
    """The loader step for ``tasks.decode=gpu``: ``JpegOrDecode``, or ``cpu_step`` itself (with a
    warning) when the model's preprocessing cannot run on the device."""
    from img_search.embedding.device_preprocess import device_preprocess

    if device_preprocess(transform) is None:
        log.warning(
            "tasks.decode=gpu: the preprocessing of %s (%s) cannot run on the device; "
            "its images are decoded on the CPU",
            model,
            transform.describe().get("transform"),
        )
        return cpu_step
    return JpegOrDecode(cpu_step, max_pixels, transform.resize_target)


class MixedCollate:
    """The encoder's collate, or, when some items are JPEG bytes, a ``DeviceBatch`` of both kinds."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, features: list[Any]) -> Any:
        jpegs = [n for n, f in enumerate(features) if isinstance(f, DeviceJpeg)]
        if not jpegs:
            return self.collate(features)
        others = [n for n, f in enumerate(features) if not isinstance(f, DeviceJpeg)]
        return DeviceBatch(
            data=torch.cat([features[n].data for n in jpegs]),
            sizes=[len(features[n].data) for n in jpegs],
            jpeg_slots=jpegs,
            cpu=self.collate([features[n] for n in others]) if others else None,
            cpu_slots=others,
        )


def decode_on_device(batch: Any, encoder: Any, max_pixels: int | None) -> None:
    """Turn a ``DeviceBatch`` into the features ``encode_images`` takes, in place; items that fail
    move to ``batch.failures``. Any other batch is left as it is."""
    features = batch.features
    if not isinstance(features, DeviceBatch):
        return
    from img_search.embedding.device_preprocess import collate, device_preprocess, split, to_device

    transform, device = encoder.image_transform(), encoder.device
    steps = device_preprocess(transform)
    items: list[Any] = [None] * len(features)
    reasons: dict[int, str] = {}
    if features.cpu is not None:
        for slot, item in zip(features.cpu_slots, split(features.cpu), strict=True):
            items[slot] = to_device(item, device)
    jpegs = features.jpegs()
    images = dict(zip(features.jpeg_slots, decoded(jpegs, device), strict=True))
    by_size: dict[tuple[int, ...], list[int]] = {}
    for slot, image in images.items():
        if isinstance(image, torch.Tensor):
            by_size.setdefault(tuple(image.shape), []).append(slot)
    for slots in by_size.values():  # (a size at a time: one call for many images of one size)
        for slot, item in zip(
            slots, split(steps(torch.stack([images[s] for s in slots]))), strict=True
        ):
            items[slot] = item
    for slot, data in zip(features.jpeg_slots, jpegs, strict=True):
        if isinstance(images[slot], torch.Tensor):
            continue
        try:  # the device could not decode it: PIL, as on the CPU path
            from img_search.images import open_image

            image = open_image(data.numpy().tobytes(), max_pixels, transform.resize_target)
            items[slot] = to_device(transform(image), device)
        except Exception as exc:
            reasons[slot] = f"{type(exc).__name__}: {exc}"
    keep = [slot for slot in range(len(items)) if slot not in reasons]
    batch.failures += [(batch.ids[slot], reason) for slot, reason in sorted(reasons.items())]
    batch.ids = [batch.ids[slot] for slot in keep]
    batch.positions = [batch.positions[slot] for slot in keep]
    batch.features = collate([items[slot] for slot in keep]) if keep else None


def decoded(jpegs: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor | Exception]:
    """Each JPEG as a (3, h, w) uint8 tensor on ``device``, in one batched call (nvJPEG on CUDA);
    when that fails, one by one, so that only the failing ones come back as their exception."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(list(jpegs), mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass
    images: list[torch.Tensor | Exception] = []
    for jpeg in jpegs:
        try:
            images.append(decode_jpeg(jpeg, mode=ImageReadMode.RGB, device=device))
        except RuntimeError as exc:
            images.append(exc)
    return images
