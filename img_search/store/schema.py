"""Column names and Arrow types of embedding tables, shared by writer and reader."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

METADATA_KEY = b"img_search"
FORMAT = "img_search.embeddings/1"

ID = "id"
MODEL = "model_name"
DATASET = "dataset_name"
EMBEDDING = "embedding"

#: A caption table's own columns, between ``id`` and ``model_name``, in the table's order
#: (the caption's position in its dataset, its image's file name and id, its text).
CAPTION_FIELDS = (
    pa.field("index", pa.int64()),
    pa.field("image", pa.string()),
    pa.field("image_id", pa.string()),
    pa.field("caption", pa.string()),
)
#: The caption columns a reader shows with a hit, text first (an image table has none).
CAPTION_COLUMNS = ("caption", "image_id", "image")

OUTPUT_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


def embedding_type(dim: int | None, dtype: str) -> pa.DataType:
    """Fixed-size list of the model's dimension; a plain list only when one file mixes dimensions."""
    value = OUTPUT_DTYPES[dtype]
    return pa.list_(value) if dim is None else pa.list_(value, dim)


ERRORS_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string()),
        pa.field(DATASET, pa.string()),
        pa.field(MODEL, pa.string()),
        pa.field("reason", pa.string()),
    ]
)


def caption_columns(
    values: Mapping[str, Sequence[Any] | pa.Array | pa.ChunkedArray],
) -> dict[str, pa.Array]:
    """``CAPTION_FIELDS`` of some captions as Arrow arrays of the table's types, from their values by
    name (lists, or Arrow arrays such as a caption source's own columns)."""
    columns = {}
    for field in CAPTION_FIELDS:
        value = values[field.name]
        if isinstance(value, pa.ChunkedArray):
            value = value.combine_chunks()
        if isinstance(value, pa.Array):
            columns[field.name] = value.cast(field.type)
        else:
            columns[field.name] = pa.array(value, field.type)
    return columns
