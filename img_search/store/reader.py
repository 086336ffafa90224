"""Reading embedding tables back (one file or a folder table) as (ids, float32 matrix) without per-row Python."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow.fs import LocalFileSystem

from img_search.store import schema as S
from img_search.store.layout import TableLayout


@dataclass
class EmbeddingMatrix:
    """Rows of one table selection: ``ids[i]`` is the item of ``vectors[i]``."""

    ids: np.ndarray  # object array of str
    vectors: np.ndarray  # (n, dim) float32

    def __len__(self) -> int:
        return len(self.ids)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON the writer stored in the table's key/value metadata (the file, or a folder's ``_common_metadata``)."""
    layout = TableLayout.of(path)
    if layout.is_folder and layout.path.is_dir() and not layout.finished():
        raise ValueError(f"{path} is not a finished img_search folder table (no _common_metadata)")
    schema = pq.read_schema(layout.metadata_file)
    raw = (schema.metadata or {}).get(S.METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} is not an img_search embedding table (no metadata)")
    return json.loads(raw)


def is_table(path: str | os.PathLike[str]) -> bool:
    """A finished embedding table of either form (a folder without metadata is not one)."""
    try:
        read_metadata(path)
    except (OSError, ValueError, pa.ArrowException):
        return False
    return True


def open_table(path: str | os.PathLike[str], memory_map: bool = True) -> Any:
    """The table's rows as a ``pyarrow.dataset.Dataset``: the file, or exactly the parts a folder's metadata lists."""
    import pyarrow.dataset as ds  # (imports pandas: half a second every pipeline process can skip)

    layout = TableLayout.of(path)
    files = [str(file) for file in table_files(layout.path)]
    filesystem = LocalFileSystem(use_mmap=memory_map)
    if not layout.is_folder:
        return ds.dataset(files[0], format="parquet", filesystem=filesystem)
    schema = pq.read_schema(layout.metadata_file).remove_metadata()
    return ds.dataset(files, schema=schema, format="parquet", filesystem=filesystem)


def table_files(path: str | os.PathLike[str]) -> list[Path]:
    """The Parquet files that hold the table's rows, in order: the file, or the parts its folder's metadata lists."""
    layout = TableLayout.of(path)
    if not layout.path.exists():
        raise FileNotFoundError(f"embedding table not found: {path}")
    if not layout.is_folder:
        return [layout.path]
    return [layout.path / name for name in read_metadata(layout.path).get("parts", [])]


def table_columns(path: str | os.PathLike[str]) -> list[str]:
    layout = TableLayout.of(path)
    return pq.read_schema(layout.metadata_file).names


def read_table(
    path: str | os.PathLike[str],
    columns: Sequence[str] | None = None,
    filters: pc.Expression | None = None,
    memory_map: bool = True,
) -> pa.Table:
    return open_table(path, memory_map).to_table(
        columns=list(columns) if columns is not None else None, filter=filters
    )


def embedding_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A (fixed-size) list column of equal-length vectors → one float32 matrix."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if pa.types.is_fixed_size_list(column.type):
        empty = np.zeros((0, column.type.list_size), dtype=np.float32)
    else:
        empty = np.zeros((0, 0), dtype=np.float32)
    parts = [chunk_vectors(chunk) for chunk in chunks if len(chunk)]
    if not parts:
        return empty
    if len({part.shape[1] for part in parts}) > 1:
        raise ValueError("vectors of different dimensions in one selection: filter by model_name")
    return np.concatenate(parts).astype(np.float32, copy=False)


def chunk_vectors(chunk: pa.Array) -> np.ndarray:
    """One non-empty chunk of a (fixed-size) list column → (rows, dim) in the stored dtype, a view where Arrow allows."""
    if not pa.types.is_fixed_size_list(chunk.type):
        lengths = pc.list_value_length(chunk)
        low, high = pc.min(lengths).as_py(), pc.max(lengths).as_py()
        if low != high:
            raise ValueError(
                f"vectors of different dimensions ({low} to {high}) in one selection: "
                "filter by model_name"
            )
    values = chunk.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(chunk), -1)


def selection_filter(model_name: str | None, dataset_name: str | None) -> pc.Expression | None:
    expression = None
    for column, value in ((S.MODEL, model_name), (S.DATASET, dataset_name)):
        if value is not None:
            condition = pc.field(column) == value
            expression = condition if expression is None else expression & condition
    return expression


def selection_batches(
    path: str | os.PathLike[str],
    model_name: str | None,
    dataset_name: str | None,
    columns: Sequence[str] = (S.ID, S.EMBEDDING),
    batch_rows: int = 8_192,
) -> Iterator[pa.RecordBatch]:
    """The rows of one selection in table order, decoded ``batch_rows`` at a time (for tables larger than memory).

    Arrow's dataset scanner decodes a whole row group at once, and a list
    column's decoding needs about ten times the vectors' size: here each file
    is streamed (not memory-mapped, whose pages would count in the process's
    RSS) batch by batch. Row groups whose statistics exclude the selection are
    skipped; those that hold nothing else are read without the filter.
    """
    conditions = {S.MODEL: model_name, S.DATASET: dataset_name}
    conditions = {column: value for column, value in conditions.items() if value is not None}
    expression = selection_filter(model_name, dataset_name)
    for file in table_files(path):
        parquet = pq.ParquetFile(file, memory_map=False, pre_buffer=False, buffer_size=2**20)
        for group in range(parquet.num_row_groups):
            match = _row_group_match(parquet.metadata.row_group(group), conditions)
            if match is False:
                continue
            read = (
                list(columns) if match else [*columns, *(c for c in conditions if c not in columns)]
            )
            for batch in parquet.iter_batches(batch_rows, row_groups=[group], columns=read):
                if not match:
                    batch = batch.filter(expression).select(list(columns))
                if batch.num_rows:
                    yield batch


def _row_group_match(group: pq.RowGroupMetaData, conditions: dict[str, str]) -> bool | None:
    """True: every row is selected; False: none is; None: the rows must be filtered."""
    every = True
    for number in range(group.num_columns):
        column = group.column(number)
        if column.path_in_schema not in conditions:
            continue
        value, stats = conditions[column.path_in_schema], column.statistics
        if stats is None or not stats.has_min_max:
            every = False
        elif not stats.min <= value <= stats.max:
            return False
        elif not stats.min == stats.max == value or stats.null_count:
            every = False
    return True if every else None


def read_embeddings(
    path: str | os.PathLike[str],
    model_name: str | None = None,
    dataset_name: str | None = None,
    *,
    memory_map: bool = True,
) -> EmbeddingMatrix:
    """ids and vectors of one (model, dataset) selection of a table of either form; both filters optional."""
    table = read_table(
        path,
        columns=[S.ID, S.EMBEDDING],
        filters=selection_filter(model_name, dataset_name),
        memory_map=memory_map,
    )
    ids = table.column(S.ID).to_numpy(zero_copy_only=False)
    return EmbeddingMatrix(ids=ids, vectors=embedding_matrix(table.column(S.EMBEDDING)))
