"""An encoder's image preprocessing, run on its device on images decoded there (``tasks.decode=gpu``).

A transform (``ImageTransform``) runs on a PIL image in a loader worker. Most
follow one recipe: resize (the shorter side to a size, or the whole image to
a fixed size) with an antialiased filter, centre crop, scale, normalise per
channel. ``device_preprocess`` reads that recipe off a transform — open_clip's
torchvision ``Compose``, a transformers CLIP or SigLIP image processor,
EfficientNet's ``ResizeCropNormalize`` — and ``DevicePreprocess`` runs it on a
decoded uint8 tensor with torchvision's tensor functions, on whatever device
the tensor is on. A transform it cannot follow (SigLIP2's NaFlex patches,
jina's own) gives None: its images stay on the CPU path.

Not bit-equal to PIL: torchvision's antialiased filters and libjpeg's or
nvJPEG's decoding differ from PIL's by a grey level here and there; the
vectors agree to a cosine the tests state (``tests/pipeline/test_gpu_decode.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

#: PIL resampling filters (their integer values, as image processors store them) → torchvision's.
FILTERS = {2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class DevicePreprocess:
    """Resize, crop, scale and normalise one decoded (3, height, width) uint8 image."""

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
    #: the encoder takes ``{"pixel_values": batch}`` (transformers) instead of the batch itself
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

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        height, width = self.target(image.shape[-1], image.shape[-2])
        resized = F.resize(image, [height, width], interpolation=self.interpolation, antialias=True)
        if self.crop is not None:
            crop_h, crop_w = self.crop
            top, left = self._offset(height - crop_h), self._offset(width - crop_w)
            resized = resized[..., top : top + crop_h, left : left + crop_w]
        pixels = resized.to(torch.float32) * self.scale
        mean = torch.tensor(self.mean, dtype=torch.float32, device=image.device)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32, device=image.device)[:, None, None]
        return (pixels - mean) / std

    def _offset(self, margin: int) -> int:
        return round(margin / 2.0) if self.crop_offset == "round" else margin // 2

    def wrap(self, pixels: torch.Tensor) -> Any:
        """A (n, 3, h, w) batch as the encoder's ``encode_images`` takes it."""
        return {"pixel_values": pixels} if self.pixel_values else pixels

    def unwrap(self, features: Any) -> torch.Tensor:
        """The pixel batch of features collated on the CPU path."""
        return features["pixel_values"] if self.pixel_values else features


def device_preprocess(transform: Any) -> DevicePreprocess | None:
    """The transform's recipe, or None when it is not resize, crop, scale and normalise."""
    from img_search.embedding.efficientnet import ResizeCropNormalize
    from img_search.embedding.open_clip import OpenCLIPImageTransform
    from img_search.embedding.transformers_dual import ProcessorImageTransform

    if isinstance(transform, OpenCLIPImageTransform):
        return _from_torchvision(transform.transform)
    if isinstance(transform, ProcessorImageTransform) and not transform.call_kwargs:
        return _from_image_processor(transform.image_processor)
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


def _from_image_processor(processor: Any) -> DevicePreprocess | None:
    """A transformers image processor with a plain recipe (CLIP, SigLIP); not NaFlex (SigLIP2)."""
    if hasattr(processor, "max_num_patches") or not getattr(processor, "do_resize", False):
        return None
    size = _dict(processor.size)
    resample = FILTERS.get(int(getattr(processor, "resample", 0) or 0))
    if resample is None:
        return None
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
    normalize = getattr(processor, "do_normalize", False)
    return DevicePreprocess(
        resize=resize,
        size=sizes,
        interpolation=resample,
        crop=crop,
        scale=float(processor.rescale_factor) if getattr(processor, "do_rescale", False) else 1.0,
        mean=tuple(processor.image_mean) if normalize else (0.0, 0.0, 0.0),
        std=tuple(processor.image_std) if normalize else (1.0, 1.0, 1.0),
        pixel_values=True,
    )


def _dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {k: v for k, v in vars(value).items() if v is not None} if value is not None else {}
