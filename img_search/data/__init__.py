"""Dataset registry: config ``dataset:`` names → classes.

Adding a source = one module here, one line in ``DATASETS`` (images) or
``TEXT_DATASETS`` (captions) and one YAML file under
``img_search/config/datasets/`` or ``img_search/config/text_dataset/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from img_search.data.base import ImageDataset, ImageItem
from img_search.data.captions_jsonl import CaptionsJsonlDataset
from img_search.data.flickr30k import Flickr30kDataset
from img_search.data.flickr30k_captions import Flickr30kCaptionsDataset
from img_search.data.hub import HubImageDataset
from img_search.data.image_folder import ImageFolderDataset
from img_search.data.inquire import InquireDataset
from img_search.data.text import CaptionRecord, TextDataset, TextItem
from img_search.data.webdataset import WebDatasetImages
from img_search.data.webdataset_captions import WebDatasetCaptions
from img_search.registry import build_from_spec

DATASETS: dict[str, type[ImageDataset]] = {
    "inquire": InquireDataset,
    "flickr30k": Flickr30kDataset,
    "image_folder": ImageFolderDataset,
    "hf_images": HubImageDataset,
    "webdataset": WebDatasetImages,
}

TEXT_DATASETS: dict[str, type[TextDataset]] = {
    "flickr30k_captions": Flickr30kCaptionsDataset,
    "captions_jsonl": CaptionsJsonlDataset,
    "webdataset_captions": WebDatasetCaptions,
}


def get_dataset(spec: Mapping[str, Any], name: str | None = None) -> ImageDataset:
    """Instantiate the image dataset a config entry describes (no I/O until ``build()``)."""
    return build_from_spec(DATASETS, spec, "dataset", name, group="datasets")


def get_text_dataset(spec: Mapping[str, Any], name: str | None = None) -> TextDataset:
    """Instantiate the caption dataset a ``text_dataset/*.yaml`` describes (no I/O until ``build()``)."""
    return build_from_spec(TEXT_DATASETS, spec, "dataset", name, group="text_dataset")


__all__ = [
    "DATASETS",
    "TEXT_DATASETS",
    "CaptionRecord",
    "CaptionsJsonlDataset",
    "Flickr30kCaptionsDataset",
    "Flickr30kDataset",
    "HubImageDataset",
    "ImageDataset",
    "ImageFolderDataset",
    "ImageItem",
    "InquireDataset",
    "TextDataset",
    "TextItem",
    "WebDatasetCaptions",
    "WebDatasetImages",
    "get_dataset",
    "get_text_dataset",
]
