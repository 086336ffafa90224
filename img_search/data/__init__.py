"""Dataset registry: config ``dataset:`` names → classes.

Adding a source = one module here, one line in ``DATASETS`` and one YAML file
under ``img_search/config/datasets/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from img_search.data.base import ImageDataset, ImageItem
from img_search.data.flickr30k import Flickr30kDataset
from img_search.data.hub import HubImageDataset
from img_search.data.image_folder import ImageFolderDataset
from img_search.data.images import ImageDecodeError, open_image
from img_search.data.inquire import InquireDataset
from img_search.registry import build_from_spec

DATASETS: dict[str, type[ImageDataset]] = {
    "inquire": InquireDataset,
    "flickr30k": Flickr30kDataset,
    "image_folder": ImageFolderDataset,
    "hf_images": HubImageDataset,
}


def get_dataset(spec: Mapping[str, Any], name: str | None = None) -> ImageDataset:
    """Instantiate the image dataset a config entry describes (no I/O until ``build()``)."""
    return build_from_spec(DATASETS, spec, "dataset", name, group="datasets")


__all__ = [
    "DATASETS",
    "Flickr30kDataset",
    "HubImageDataset",
    "ImageDataset",
    "ImageDecodeError",
    "ImageFolderDataset",
    "ImageItem",
    "InquireDataset",
    "get_dataset",
    "open_image",
]
