"""Random access to the rows of local Parquet files, read with pyarrow rather than through 🤗's cache.

🤗 ``datasets.load_dataset`` converts local Parquet into its Arrow cache (a
second full copy on disk) and memory-maps it; opening a cache of a million
rows walks one header per 100-row record batch and maps every page of the
file. Parquet already has what random access needs: the row count of every
row group in the file's footer. ``ParquetRows`` is built from those footers
alone; a whole column (the ids) is read file by file with that column only,
and one row's value by reading the row group that holds it, again with that
column only, keeping the last row group read (a loader reads consecutive
positions, so the next rows come from memory).

Nothing open is pickled: a DataLoader worker gets a copy without file
handles or cached rows, and opens what it reads itself (a forked copy drops
what it inherited on its first read). One thread of a process reads rows at
a time, as the loader does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: A row group whose image column holds more than this (uncompressed) is not read directly:
#: every loader worker would hold one such row group in memory, worse than 🤗's mapped cache.
MAX_ROW_GROUP_BYTES = 256 * 2**20


class DirectReadDeclined(Exception):
    """These files are better read through 🤗 ``datasets`` (the message says why)."""


def is_image_type(kind: pa.DataType) -> bool:
    """Types 🤗 ``Image(decode=False)`` stores: ``{bytes, path}`` structs, binary (bytes), string (a path)."""
    if pa.types.is_struct(kind):
        names = {kind.field(i).name for i in range(kind.num_fields)}
        return bool(names & {"bytes", "path"}) and names <= {"bytes", "path"}
    return (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    )


def image_source(value: Any) -> dict[str, Any] | None:
    """An image cell as 🤗 ``Image(decode=False)`` gives it: ``{"bytes", "path"}`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {"bytes": value.get("bytes"), "path": value.get("path")}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(value), "path": None}
    if isinstance(value, str):
        return {"bytes": None, "path": value}
    raise TypeError(f"not an image value: {type(value).__name__}")


class ParquetRows:
    """The rows of an ordered list of local Parquet files, numbered across the files in order.

    ``columns`` are the columns that will be read: every file must give each
    of them the type the first file gives it (🤗 would cast them; here the
    files are declined instead). ``image_column``, if given, must hold images
    (see ``is_image_type``) in row groups of at most ``MAX_ROW_GROUP_BYTES``.
    Otherwise the constructor raises ``DirectReadDeclined``.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        columns: Sequence[str] = (),
        image_column: str | None = None,
    ) -> None:
        if not files:
            raise DirectReadDeclined("no data files")
        limit = MAX_ROW_GROUP_BYTES
        self.files = [str(f) for f in files]
        group_rows: list[int] = []
        group_file: list[int] = []
        group_index: list[int] = []
        schema: pa.Schema | None = None
        for number, path in enumerate(self.files):
            with pq.ParquetFile(path) as parquet:
                meta, file_schema = parquet.metadata, parquet.schema_arrow
            if schema is None:
                schema = file_schema
            for name in columns:
                if name in schema.names and (
                    name not in file_schema.names
                    or file_schema.field(name).type != schema.field(name).type
                ):
                    raise DirectReadDeclined(
                        f"{path} does not give column {name!r} the type "
                        f"{schema.field(name).type} of {self.files[0]}"
                    )
            leaves = [
                j
                for j in range(meta.num_columns)
                if meta.schema.column(j).path.split(".")[0] == image_column
            ]
            for index in range(meta.num_row_groups):
                group = meta.row_group(index)
                size = sum(group.column(j).total_uncompressed_size for j in leaves)
                if size > limit:
                    raise DirectReadDeclined(
                        f"row group {index} of {path} holds {size / 2**20:.0f} MiB of "
                        f"{image_column!r} (more than {limit / 2**20:.0f} MiB a read)"
                    )
                group_rows.append(group.num_rows)
                group_file.append(number)
                group_index.append(index)
        assert schema is not None
        if image_column in schema.names and not is_image_type(schema.field(image_column).type):
            raise DirectReadDeclined(
                f"column {image_column!r} is {schema.field(image_column).type}, not image bytes or paths"
            )
        self.schema = schema
        self._starts = np.cumsum([0, *group_rows]).astype(np.int64)  # first row of each group
        self._group_file = np.asarray(group_file, dtype=np.int64)
        self._group_index = np.asarray(group_index, dtype=np.int64)
        self.num_rows = int(self._starts[-1])
        self._forget()

    @property
    def column_names(self) -> list[str]:
        """The columns of the first file (as 🤗 takes its features from the first file)."""
        return list(self.schema.names)

    def __len__(self) -> int:
        return self.num_rows

    # -- whole columns ------------------------------------------------------
    def column(self, name: str) -> pa.ChunkedArray:
        """Every row's value of ``name``, reading only that column, one file at a time."""
        chunks: list[pa.Array] = []
        for path in self.files:
            with pq.ParquetFile(path) as parquet:
                chunks.extend(parquet.read(columns=[name], use_threads=False).column(0).chunks)
        return pa.chunked_array(chunks, type=self.schema.field(name).type)

    # -- single rows --------------------------------------------------------
    def row(self, index: int, column: str) -> dict[str, Any] | None:
        """Row ``index``'s image in ``column``, as ``{"bytes", "path"}`` (``image_source``)."""
        if not 0 <= index < self.num_rows:
            raise IndexError(f"row {index} out of range: {self.num_rows} rows")
        group = int(np.searchsorted(self._starts, index, side="right")) - 1
        values = self._row_group(group, column)
        return image_source(values[index - int(self._starts[group])].as_py())

    def _row_group(self, group: int, column: str) -> pa.Array:
        if self._pid != os.getpid():  # a forked copy: nothing inherited is used
            self._forget()
        if self._cached is not None and self._cached[:2] == (group, column):
            return self._cached[2]
        self._cached = None  # let the previous row group go before reading the next
        table = self._file(int(self._group_file[group])).read_row_group(
            int(self._group_index[group]), columns=[column], use_threads=False
        )
        values = table.column(0).combine_chunks()
        self._cached = (group, column, values)
        return values

    def _file(self, number: int) -> pq.ParquetFile:
        if self._open is not None and self._open[0] == number:
            return self._open[1]
        self.close()
        parquet = pq.ParquetFile(self.files[number])
        self._open = (number, parquet)
        return parquet

    def close(self) -> None:
        """Close the open file (if any); the next read reopens it."""
        if self._open is not None and self._pid == os.getpid():
            self._open[1].close()
        self._open = None

    def _forget(self) -> None:
        self._open: tuple[int, pq.ParquetFile] | None = None
        self._cached: tuple[int, str, pa.Array] | None = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_open=None, _cached=None, _pid=None)
        return state
