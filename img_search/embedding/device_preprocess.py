"""An encoder's image preprocessing, run on its device on images decoded there (``tasks.decode=gpu``).

A transform (``ImageTransform``) runs on a PIL image in a loader worker. Most
follow one recipe: resize (the shorter side to a size, or the whole image to
a fixed size) with an antialiased filter, centre crop, scale, normalise per
channel. ``device_preprocess`` reads that recipe off a transform — open_clip's
torchvision ``Compose``, a transformers CLIP or SigLIP image processor,
EfficientNet's ``ResizeCropNormalize`` — and ``DevicePreprocess`` runs it on a
decoded uint8 tensor with torchvision's tensor functions, on whatever device
the tensor is on; SigLIP2's NaFlex processor (resize to at most
``max_num_patches`` patches, aspect kept, then patches) is ``NaFlexPreprocess``.
A transform it cannot follow (jina's own, a processor called with options)
gives None: its images stay on the CPU path.

Each gives one item's features as the transform does (a tensor, or a dict of
them for transformers), and ``collate`` / ``split`` turn a batch of them into
what ``encode_images`` takes and back.

Not bit-equal to PIL: the resize runs PIL's two passes (width, then height,
rounded to 8 bits between them) with torch's antialiased filters in float,
and libjpeg's or nvJPEG's decoding may differ from PIL's, so a grey level
differs here and there; the vectors agree to a cosine the tests state
(``tests/pipeline/test_gpu_decode.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

#: PIL resampling filters (their integer values, as image processors store them) → torchvision's.
FILTERS = {2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class DevicePreprocess:
    """Resize, crop, scale and normalise decoded uint8 images of one size, (n, 3, height, width)."""

    #: ``shortest``: the shorter side to ``size[0]``, the aspect kept; ``exact``: to ``size`` (h, w)
    resize: str
    size: tuple[int, ...]
    interpolation: str  # "bilinear" | "bicubic" (antialiased, as PIL's)
    #: the longer side of a ``shortest`` resize: ``int`` truncates (torchvision, transformers),
    #: ``round`` rounds and keeps at least the crop (EfficientNet's own)
    longer: str = "int"
    crop: tuple[int, int] | None = None  # (height, width)
    #: the crop's offset: ``round`` of half the margin (torchvision), or ``floor`` (the others)
    crop_offset: str = "floor"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    #: an item is ``{"pixel_values": image}`` (transformers) instead of the image itself
    pixel_values: bool = False

    def target(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) after the resize."""
        if self.resize == "exact":
            return self.size[0], self.size[1]
        side = self.size[0]
        if self.longer == "round":
            scale = side / min(width, height)
            least = self.crop[0] if self.crop else 1
            return max(least, round(height * scale)), max(least, round(width * scale))
        if width <= height:
            return int(side * height / width), side
        return side, int(side * width / height)

    def __call__(self, images: torch.Tensor) -> Any:
        """The batch's features (a tensor, or ``{"pixel_values": ...}``), as ``collate`` makes them."""
        height, width = self.target(images.shape[-1], images.shape[-2])
        resized = _resize(images, height, width, self.interpolation)
        if self.crop is not None:
            crop_h, crop_w = self.crop
            top, left = self._offset(height - crop_h), self._offset(width - crop_w)
            resized = resized[..., top : top + crop_h, left : left + crop_w]
        pixels = _normalised(resized, self.scale, self.mean, self.std)
        return {"pixel_values": pixels} if self.pixel_values else pixels

    def _offset(self, margin: int) -> int:
        return round(margin / 2.0) if self.crop_offset == "round" else margin // 2


@dataclass(frozen=True)
class NaFlexPreprocess:
    """SigLIP2's processor: resize (aspect kept) to at most ``max_patches`` patches, normalise, cut
    into ``patch`` x ``patch`` patches in its order, pad to ``max_patches`` with a mask."""

    patch: int
    max_patches: int
    interpolation: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images of one size, (n, 3, height, width) → the batch's features, as ``collate`` makes them."""
        from transformers.models.siglip2.image_processing_pil_siglip2 import (
            get_image_size_for_max_num_patches,
        )

        height, width = get_image_size_for_max_num_patches(
            images.shape[-2], images.shape[-1], self.patch, self.max_patches
        )
        pixels = _normalised(
            _resize(images, height, width, self.interpolation), self.scale, self.mean, self.std
        )
        count, rows, columns = len(images), height // self.patch, width // self.patch
        patches = pixels.reshape(count, 3, rows, self.patch, columns, self.patch)
        patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(count, rows * columns, -1)
        padded = patches.new_zeros((count, self.max_patches, patches.shape[-1]))
        padded[:, : rows * columns] = patches
        mask = torch.zeros((count, self.max_patches), dtype=torch.int32, device=images.device)
        mask[:, : rows * columns] = 1
        shape = torch.tensor([rows, columns], dtype=torch.int64).to(
            images.device, non_blocking=True
        )
        return {
            "pixel_values": padded,
            "pixel_attention_mask": mask,
            "spatial_shapes": shape.expand(count, 2).contiguous(),
        }


def _resize(image: torch.Tensor, height: int, width: int, interpolation: str) -> torch.Tensor:
    """Antialiased, as PIL resizes: the width, then the height, each pass rounded to whole grey
    levels (PIL keeps 8 bits between them); float32 0..255, the same operations on every device."""
    pixels = image.to(torch.float32)
    for size in ((pixels.shape[-2], width), (height, width)):
        if tuple(pixels.shape[-2:]) != size:
            pixels = torch.nn.functional.interpolate(
                pixels, size=size, mode=interpolation, antialias=True, align_corners=False
            )
            pixels = pixels.add_(0.5).floor_().clamp_(0, 255)
    return pixels


def _normalised(image: torch.Tensor, scale: float, mean: Any, std: Any) -> torch.Tensor:
    """``(image x scale - mean) / std`` as one multiply and one subtract."""
    factor, offset = _affine(scale, tuple(mean), tuple(std), image.device)
    return image.to(torch.float32).mul_(factor).sub_(offset)


@functools.lru_cache(maxsize=16)
def _affine(
    scale: float, mean: tuple, std: tuple, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """The normalisation's factor and offset per channel, made on the device once (a tensor made
    from a list on a GPU is a blocking copy: once per image would stall the queue)."""
    std_ = torch.tensor(std, dtype=torch.float32)[:, None, None]
    mean_ = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    return (scale / std_).to(device), (mean_ / std_).to(device)


def collate(items: list[Any]) -> Any:
    """Items' features (tensors, or dicts of tensors) → one batch, on their device."""
    if isinstance(items[0], dict):
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}
    return torch.stack(items)


def split(batch: Any) -> list[Any]:
    """A collated batch → its items' features (``collate``'s inverse)."""
    if isinstance(batch, dict):
        count = len(next(iter(batch.values())))
        return [{key: value[n] for key, value in batch.items()} for n in range(count)]
    return list(batch.unbind(0))


def to_device(item: Any, device: torch.device) -> Any:
    if isinstance(item, dict):
        return {key: value.to(device) for key, value in item.items()}
    return item.to(device)


def device_preprocess(transform: Any) -> DevicePreprocess | NaFlexPreprocess | None:
    """The transform's recipe, or None when it is not resize, crop, scale and normalise."""
    from img_search.embedding.efficientnet import ResizeCropNormalize
    from img_search.embedding.open_clip import OpenCLIPImageTransform
    from img_search.embedding.transformers_dual import ProcessorImageTransform

    if isinstance(transform, OpenCLIPImageTransform):
        return _from_torchvision(transform.transform)
    if isinstance(transform, ProcessorImageTransform):
        return _from_image_processor(transform.image_processor, transform.call_kwargs)
    if type(transform) is ResizeCropNormalize:
        return DevicePreprocess(
            resize="shortest",
            size=(transform.resize,),
            interpolation="bicubic",
            longer="round",
            crop=(transform.size, transform.size),
            scale=1.0,
            mean=(transform.mean,) * 3,
            std=(transform.std,) * 3,
        )
    return None


def _from_torchvision(compose: Any) -> DevicePreprocess | None:
    """open_clip's validation transform: Resize, CenterCrop, (RGB), ToTensor, Normalize."""
    steps = [type(step).__name__ for step in getattr(compose, "transforms", [])]
    if steps != ["Resize", "CenterCrop", "MaybeConvertMode", "MaybeToTensor", "Normalize"]:
        return None
    resize, crop, _, _, normalize = compose.transforms
    size = resize.size if isinstance(resize.size, int) else tuple(resize.size)
    mode = getattr(resize.interpolation, "value", resize.interpolation)
    if resize.max_size is not None or mode not in FILTERS.values():
        return None
    exact = isinstance(size, tuple) and len(size) == 2
    return DevicePreprocess(
        resize="exact" if exact else "shortest",
        size=size if exact else (size if isinstance(size, int) else size[0],),
        interpolation=mode,
        crop=tuple(crop.size),
        crop_offset="round",
        mean=tuple(normalize.mean),
        std=tuple(normalize.std),
    )


def _from_image_processor(
    processor: Any, call_kwargs: dict[str, Any]
) -> DevicePreprocess | NaFlexPreprocess | None:
    """A transformers image processor with a plain recipe (CLIP, SigLIP) or SigLIP2's NaFlex."""
    resample = FILTERS.get(int(getattr(processor, "resample", 0) or 0))
    normalize = getattr(processor, "do_normalize", False)
    scale = float(processor.rescale_factor) if getattr(processor, "do_rescale", False) else 1.0
    mean = tuple(processor.image_mean) if normalize else (0.0, 0.0, 0.0)
    std = tuple(processor.image_std) if normalize else (1.0, 1.0, 1.0)
    if hasattr(processor, "max_num_patches"):  # NaFlex: the call's patch settings win
        if resample is None or set(call_kwargs) - {"patch_size", "max_num_patches"}:
            return None
        settings = {"patch_size": processor.patch_size, **call_kwargs}
        settings.setdefault("max_num_patches", processor.max_num_patches)
        return NaFlexPreprocess(
            patch=int(settings["patch_size"]),
            max_patches=int(settings["max_num_patches"]),
            interpolation=resample,
            scale=scale,
            mean=mean,
            std=std,
        )
    if call_kwargs or not getattr(processor, "do_resize", False) or resample is None:
        return None
    size = _dict(processor.size)
    if "shortest_edge" in size:
        resize, sizes = "shortest", (int(size["shortest_edge"]),)
    elif "height" in size and "width" in size:
        resize, sizes = "exact", (int(size["height"]), int(size["width"]))
    else:
        return None
    crop = None
    if getattr(processor, "do_center_crop", False):
        crop_size = _dict(processor.crop_size)
        crop = (int(crop_size["height"]), int(crop_size["width"]))
    return DevicePreprocess(
        resize=resize,
        size=sizes,
        interpolation=resample,
        crop=crop,
        scale=scale,
        mean=mean,
        std=std,
        pixel_values=True,
    )


def _dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {k: v for k, v in vars(value).items() if v is not None} if value is not None else {}
