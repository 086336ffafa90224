"""Column names and Arrow types of embedding tables, shared by writer and reader."""

from __future__ import annotations

import pyarrow as pa

METADATA_KEY = b"img_search"
FORMAT = "img_search.embeddings/1"

ID = "id"
MODEL = "model_name"
DATASET = "dataset_name"
EMBEDDING = "embedding"

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
