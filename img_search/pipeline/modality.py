"""What differs between the image and the caption pipelines; everything else is shared."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the entry points import this before the config is checked: no torch yet
    import pyarrow as pa
    import torch

    from img_search.embedding import Encoder
    from img_search.pipeline.settings import TaskSettings


def image_dataset_copy(name: str) -> str:
    return f"datasets.{name}.path=<local copy in the Hub layout>"


@dataclass
class Modality:
    #: "image" or "caption": recorded in the metadata.
    kind: str
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
