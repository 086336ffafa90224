"""Reading embedding tables back as (ids, float32 matrix) without per-row Python."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from img_search.store import schema as S


@dataclass
class EmbeddingMatrix:
    """Rows of one table selection: ``ids[i]`` is the item of ``vectors[i]``."""

    ids: np.ndarray  # object array of str
    vectors: np.ndarray  # (n, dim) float32

    def __len__(self) -> int:
        return len(self.ids)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON the writer stored in the file's key/value metadata."""
    schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(S.METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} is not an img_search embedding table (no metadata)")
    return json.loads(raw)


def embedding_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A (fixed-size) list column of equal-length vectors → one float32 matrix."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if pa.types.is_fixed_size_list(column.type):
        empty = np.zeros((0, column.type.list_size), dtype=np.float32)
    else:
        empty = np.zeros((0, 0), dtype=np.float32)
    parts = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if not pa.types.is_fixed_size_list(chunk.type):
            lengths = pc.list_value_length(chunk)
            low, high = pc.min(lengths).as_py(), pc.max(lengths).as_py()
            if low != high:
                raise ValueError(
                    f"vectors of different dimensions ({low} to {high}) in one selection: "
                    "filter by model_name"
                )
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        parts.append(values.reshape(len(chunk), -1))
    if not parts:
        return empty
    if len({part.shape[1] for part in parts}) > 1:
        raise ValueError("vectors of different dimensions in one selection: filter by model_name")
    return np.concatenate(parts).astype(np.float32, copy=False)


def read_embeddings(
    path: str | os.PathLike[str],
    model_name: str | None = None,
    dataset_name: str | None = None,
    *,
    memory_map: bool = True,
) -> EmbeddingMatrix:
    """ids and vectors of one (model, dataset) selection; both filters optional."""
    filters = []
    if model_name is not None:
        filters.append(pc.field(S.MODEL) == model_name)
    if dataset_name is not None:
        filters.append(pc.field(S.DATASET) == dataset_name)
    expression = None
    for condition in filters:
        expression = condition if expression is None else expression & condition
    table = pq.read_table(
        path, columns=[S.ID, S.EMBEDDING], filters=expression, memory_map=memory_map
    )
    ids = table.column(S.ID).to_numpy(zero_copy_only=False)
    return EmbeddingMatrix(ids=ids, vectors=embedding_matrix(table.column(S.EMBEDDING)))
