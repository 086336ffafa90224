"""What differs between the image and the caption pipelines; everything else is shared.

``MODALITIES`` names each by its kind (``image``, ``caption``): the command,
the Python API and a Ray actor all find theirs there, with the config it is
composed from and the dataset specs it takes from that config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from img_search.store import schema as S

if TYPE_CHECKING:  # the commands import this before the config is checked: no torch yet
    import pyarrow as pa
    import torch
    from omegaconf import DictConfig

    from img_search.data import ImageDataset, TextDataset
    from img_search.embedding import Encoder
    from img_search.embedding.prepare import CaptionText
    from img_search.pipeline.settings import TaskSettings


def image_dataset_copy(name: str) -> str:
    return f"datasets.{name}.path=<local copy in the Hub layout>"


@dataclass
class Modality:
    #: "image" or "caption": recorded in the metadata.
    kind: str
    #: The Hydra config the command composes (``embed_config``, ``embed_text_config``).
    config_name: str
    #: composed config → {dataset name: spec} of the datasets to embed.
    dataset_specs: Callable[[DictConfig], Mapping[str, Any]]
    #: name, spec → an unbuilt source.
    make_source: Callable[[str, Mapping[str, Any]], Any]
    #: encoder, settings → picklable ``item → features`` run in loader workers.
    make_prepare: Callable[[Encoder, TaskSettings], Callable[[Any], Any]]
    #: encoder → picklable collate of a list of features.
    make_collate: Callable[[Encoder], Callable[[list[Any]], Any]]
    #: encoder, collated features → (n, dim) unit vectors.
    forward: Callable[[Encoder, Any], torch.Tensor]
    #: capability check, e.g. "has an image tower".
    supports: Callable[[Encoder], bool]
    extra_fields: list[pa.Field] = field(default_factory=list)
    #: source, positions → the extra columns of those rows (in the process that commits them).
    extra_columns: Callable[[Any, list[int]], dict[str, pa.Array]] | None = None
    #: Whether preparing an item is worth loader worker processes by default (decoding is; text is not).
    cpu_heavy_prepare: bool = True
    #: dataset name → the override that points it at a local copy (named when the Hub cannot serve it).
    local_copy: Callable[[str], str] = image_dataset_copy


# -- images -------------------------------------------------------------------------------------


def image_dataset_specs(cfg: DictConfig) -> Mapping[str, Any]:
    return cfg.get("datasets") or {}


def _image_source(name: str, spec: Mapping[str, Any]) -> ImageDataset:
    from img_search.data import get_dataset

    return get_dataset(spec, name=name)


def _image_prepare(encoder: Encoder, settings: TaskSettings) -> Any:
    from img_search.embedding.prepare import DecodeAndTransform

    step = DecodeAndTransform(encoder.image_transform(), settings.max_image_pixels)
    if settings.decode == "gpu":
        from img_search.pipeline.gpu_decode import jpegs_to_device

        transform = encoder.image_transform()
        return jpegs_to_device(step, transform, settings.max_image_pixels, encoder.name)
    return step


def _image_collate(encoder: Encoder) -> Any:
    from img_search.pipeline.gpu_decode import MixedCollate  # (as it is, without tasks.decode=gpu)

    return MixedCollate(encoder.image_transform().collate)


def _image_forward(encoder: Encoder, features: Any) -> torch.Tensor:
    return encoder.encode_images(features)


IMAGES = Modality(
    kind="image",
    config_name="embed_config",
    dataset_specs=image_dataset_specs,
    make_source=_image_source,
    make_prepare=_image_prepare,
    make_collate=_image_collate,
    forward=_image_forward,
    supports=lambda encoder: encoder.supports_images,
)


# -- captions: an item is a caption string, encoded by the text tower, written with its
# ``CaptionRecord`` columns (index, image, image_id, caption) ----------------------------------


def text_dataset_specs(cfg: DictConfig) -> Mapping[str, Any]:
    """The single ``text_dataset`` entry, keyed by its ``name`` (the config choice by default)."""
    spec = cfg.get("text_dataset")
    if not spec:
        return {}
    spec = dict(spec)
    name = str(spec.pop("name", None) or spec.get("dataset"))
    return {name: spec}


def _text_source(name: str, spec: Mapping[str, Any]) -> TextDataset:
    from img_search.data import get_text_dataset

    return get_text_dataset(spec, name=name)


def _text_prepare(encoder: Encoder, settings: TaskSettings) -> CaptionText:
    from img_search.embedding.prepare import CaptionText

    return CaptionText()


def _text_collate(encoder: Encoder) -> Any:
    return list


def _text_forward(encoder: Encoder, texts: list[str]) -> torch.Tensor:
    return encoder.encode_texts(texts)


CAPTIONS = Modality(
    kind="caption",
    config_name="embed_text_config",
    dataset_specs=text_dataset_specs,
    make_source=_text_source,
    make_prepare=_text_prepare,
    make_collate=_text_collate,
    forward=_text_forward,
    supports=lambda encoder: encoder.supports_texts,
    extra_fields=list(S.CAPTION_FIELDS),
    extra_columns=lambda source, positions: S.caption_columns(source.columns(positions)),
    cpu_heavy_prepare=False,
    local_copy=lambda name: "text_dataset.path=<local copy in the Hub layout>",
)

#: Each modality by its kind, as the metadata and a Ray actor name it.
MODALITIES: dict[str, Modality] = {m.kind: m for m in (IMAGES, CAPTIONS)}
