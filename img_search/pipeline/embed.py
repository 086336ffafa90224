"""Image embedding pipeline: ``python -m img_search.pipeline.embed models=... datasets=... output_path=...``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from img_search.command_line import hydra_entry
from img_search.pipeline.cli import run_cli
from img_search.pipeline.modality import Modality

if TYPE_CHECKING:  # imported when a job runs: --help and config errors never wait for torch
    import torch

    from img_search.data import ImageDataset
    from img_search.embedding import Encoder, ImageTransform
    from img_search.pipeline.settings import TaskSettings


class DecodeAndTransform:
    """Loader-worker step for images: decode to RGB (with the pixel limit), then the encoder's transform."""

    def __init__(self, transform: ImageTransform, max_pixels: int | None) -> None:
        self.transform, self.max_pixels = transform, max_pixels

    def __call__(self, item: Any) -> Any:
        from img_search.data import open_image

        image = open_image(item.source, self.max_pixels, resize_to=self.transform.resize_target)
        return self.transform(image)


def _prepare(encoder: Encoder, settings: TaskSettings) -> Any:
    step = DecodeAndTransform(encoder.image_transform(), settings.max_image_pixels)
    if settings.decode == "gpu":
        from img_search.pipeline.gpu_decode import jpegs_to_device

        transform = encoder.image_transform()
        return jpegs_to_device(step, transform, settings.max_image_pixels, encoder.name)
    return step


def _collate(encoder: Encoder) -> Any:
    from img_search.pipeline.gpu_decode import MixedCollate  # (as it is, without tasks.decode=gpu)

    return MixedCollate(encoder.image_transform().collate)


def _forward(encoder: Encoder, features: Any) -> torch.Tensor:
    return encoder.encode_images(features)


def _source(name: str, spec: Mapping[str, Any]) -> ImageDataset:
    from img_search.data import get_dataset

    return get_dataset(spec, name=name)


IMAGES = Modality(
    kind="image",
    make_source=_source,
    make_prepare=_prepare,
    make_collate=_collate,
    forward=_forward,
    supports=lambda encoder: encoder.supports_images,
)


def image_dataset_specs(cfg: DictConfig) -> Mapping[str, Any]:
    return cfg.get("datasets") or {}


@hydra_entry(config_path="pkg://img_search.config", config_name="embed_config")
def main(cfg: DictConfig) -> None:
    run_cli(cfg, IMAGES, image_dataset_specs(cfg))


if __name__ == "__main__":
    main()
