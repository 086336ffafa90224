"""Writing embedding tables so that a reader never mistakes a half-written file for a finished one.

Rows arrive in *part files*, one (model, dataset) each, written under a
temporary name and renamed when closed (``PartWriter``). A finished table is
made from committed parts in one of two ways:

- ``assemble_file``: one ``.parquet`` file, the parts' row groups copied in
  order (after the rows of an earlier finished table, when appending), written
  under a temporary name and renamed into place;
- ``publish_folder``: the parts renamed into the table's folder, then its
  ``_common_metadata`` written last, so the metadata names exactly the parts
  that belong to the table.

The writer knows the schema and nothing of models or datasets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from img_search.atomic import atomic_write, fsync_file, temporary_name
from img_search.faults import fail_point
from img_search.store import schema as S
from img_search.store.layout import COMMON_METADATA, TableLayout

ROW_GROUP_BYTES = 64 * 1024 * 1024


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How each column is written: the vectors plain, the other columns as pyarrow would.

    Parquet dictionary-encodes a column until its dictionary outgrows a page,
    and float16 has only 65,536 values: every page of a float16 vector column
    stayed dictionary-encoded and decoded at about 50,000 rows of 768 a second,
    about a sixth of the plain encoding's speed. Snappy saves nothing on float
    vectors, and min/max statistics of vector values serve no filter. Tables
    written before (dictionary, Snappy) read as they are.
    """
    others = [name for name in schema.names if name != S.EMBEDDING]
    return {
        "compression": {**dict.fromkeys(others, "snappy"), S.EMBEDDING: "none"},
        "use_dictionary": others,
        "write_statistics": others,
    }


def vectors_to_arrow(vectors: np.ndarray, dtype: str = "float32") -> pa.FixedSizeListArray:
    """(n, dim) matrix → fixed-size-list array without per-row Python."""
    matrix = np.ascontiguousarray(vectors, dtype=np.dtype(dtype))
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d matrix of vectors, got shape {matrix.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def table_schema(
    dim: int | None, output_dtype: str, extra_fields: Sequence[pa.Field] = ()
) -> pa.Schema:
    """id, the modality's own columns, model_name, dataset_name, embedding (fixed size when ``dim``)."""
    return pa.schema(
        [
            pa.field(S.ID, pa.string()),
            *extra_fields,
            pa.field(S.MODEL, pa.string()),
            pa.field(S.DATASET, pa.string()),
            pa.field(S.EMBEDDING, S.embedding_type(dim, output_dtype)),
        ]
    )


def with_metadata(schema: pa.Schema, metadata: dict[str, Any]) -> pa.Schema:
    return schema.with_metadata({S.METADATA_KEY: json.dumps(metadata, default=str).encode()})


class PartWriter:
    """Rows of one (model, dataset) into one part file, which appears under its name only when closed.

    ``fixed_size=False`` stores vectors as plain lists, so that the parts of a
    folder table share one schema whatever each model's dimension, and every
    tool opens the folder as it is. It costs no decoding speed: plain and
    fixed-size lists of float vectors decode alike once the column is written
    plain (``parquet_options``); the dictionary encoding was the cost.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        model_name: str,
        dataset_name: str,
        *,
        output_dtype: str = "float32",
        extra_fields: Sequence[pa.Field] = (),
        fixed_size: bool = True,
    ) -> None:
        if output_dtype not in S.OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {sorted(S.OUTPUT_DTYPES)}")
        self.path = Path(path)
        self.model_name, self.dataset_name = model_name, dataset_name
        self.output_dtype = output_dtype
        self.extra_fields = list(extra_fields)
        self.fixed_size = fixed_size
        self.rows = 0
        self.dim: int | None = None
        self._tmp = temporary_name(self.path)
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffered_bytes = 0

    def write(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        extra_columns: dict[str, pa.Array] | None = None,
    ) -> None:
        if len(ids) == 0:
            return
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        dim = int(vectors.shape[1])
        if self.dim is not None and dim != self.dim:
            raise ValueError(f"model {self.model_name} changed dimension from {self.dim} to {dim}")
        self.dim = dim
        schema = table_schema(
            dim if self.fixed_size else None, self.output_dtype, self.extra_fields
        )
        embedding = vectors_to_arrow(vectors, self.output_dtype)
        if not self.fixed_size:
            embedding = embedding.cast(schema.field(S.EMBEDDING).type)
        columns: dict[str, pa.Array] = {S.ID: pa.array(list(ids), pa.string())}
        for field in self.extra_fields:
            columns[field.name] = pa.array((extra_columns or {})[field.name], field.type)
        columns[S.MODEL] = pa.array(np.full(len(ids), self.model_name, dtype=object), pa.string())
        columns[S.DATASET] = pa.array(
            np.full(len(ids), self.dataset_name, dtype=object), pa.string()
        )
        columns[S.EMBEDDING] = embedding
        batch = pa.RecordBatch.from_pydict(columns, schema=schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, schema, **parquet_options(schema))
        self._buffer.append(batch)
        self._buffered_bytes += batch.nbytes
        self.rows += len(ids)
        if self._buffered_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def close(self) -> int:
        """Rename the part into place (durably); returns its rows. No rows, no file."""
        if self._writer is None:
            return 0
        self._flush()
        self._writer.close()
        self._writer = None
        fsync_file(self._tmp)
        os.replace(self._tmp, self.path)
        return self.rows

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            self._writer.write_table(pa.Table.from_batches(self._buffer))
        self._buffer, self._buffered_bytes = [], 0


def assemble_file(
    path: str | os.PathLike[str],
    schema: pa.Schema,
    parts: Sequence[Path],
    earlier: Path | None = None,
) -> int:
    """One finished ``.parquet``: the rows of ``earlier`` (a finished table), then each part's."""
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        with pq.ParquetWriter(tmp, schema, **parquet_options(schema)) as writer:
            for source in ([earlier] if earlier else []) + list(parts):
                file = pq.ParquetFile(source)
                for group in range(file.num_row_groups):
                    table = file.read_row_group(group)
                    writer.write_table(table.cast(schema))
                    rows += table.num_rows
        fail_point("finalize")

    atomic_write(path, write)
    return rows


def publish_folder(layout: TableLayout, schema: pa.Schema, parts: Sequence[Path]) -> None:
    """Make ``layout.path`` a folder table of ``parts`` (added to the parts it holds already).

    A new folder is assembled beside the table and renamed into place in one
    step; an existing one receives the new parts by rename, then its metadata,
    which lists every part of the table, is replaced. Redone after a crash, it
    finishes what it started.
    """
    target = layout.path if layout.finished() else layout.staging_dir
    target.mkdir(parents=True, exist_ok=True)
    for part in parts:
        if part != target / part.name and (part.exists() or not (target / part.name).exists()):
            os.replace(part, target / part.name)  # (a rerun after a crash finds some moved already)
    fail_point("finalize")
    atomic_write(target / COMMON_METADATA, lambda tmp: pq.write_metadata(schema, tmp))
    if target != layout.path:
        if layout.path.is_dir():
            layout.path.rmdir()  # empty: anything else was refused before the job started
        os.replace(target, layout.path)


def write_errors(path: str | os.PathLike[str], rows: Sequence[Sequence[str]]) -> None:
    """The errors table (id, dataset_name, model_name, reason); no errors, no file."""
    if not rows:
        Path(path).unlink(missing_ok=True)
        return
    columns = list(zip(*rows, strict=True))
    table = pa.Table.from_arrays(
        [pa.array(list(c), pa.string()) for c in columns], schema=S.ERRORS_SCHEMA
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # a folder table's ``<folder>.side/``
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_errors(path: str | os.PathLike[str]) -> list[tuple[str, str, str, str]]:
    if not Path(path).is_file():
        return []
    table = pq.read_table(path)
    return list(zip(*(table.column(n).to_pylist() for n in S.ERRORS_SCHEMA.names), strict=True))
