"""Embedding tables at the file level: their metadata, their files (one file or a folder's listed
parts), their rows as Arrow, and a selection's row groups streamed for tables larger than memory.

Reading one (model, dataset) selection into memory, with the null/NaN policy,
is ``store.selection``'s job."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow.fs import LocalFileSystem

from img_search.store import schema as S
from img_search.store.layout import TableLayout


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON the writer stored in the table's key/value metadata (the file, or a folder's ``_common_metadata``)."""
    layout = TableLayout.of(path)
    if layout.is_folder and layout.path.is_dir() and not layout.finished():
        raise ValueError(f"{path} is not a finished img_search folder table (no _common_metadata)")
    schema = pq.read_schema(layout.metadata_file)
    raw = (schema.metadata or {}).get(S.METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} is not an img_search embedding table (no metadata)")
    try:
        metadata = json.loads(raw)
    except ValueError as exc:  # (not UTF-8, or not JSON)
        raise ValueError(f"{path}: its img_search metadata is not valid JSON ({exc})") from None
    check_metadata(metadata, path)
    return metadata


#: Fields of the metadata that readers look into, and the JSON type each must have.
METADATA_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "models": dict,
    "datasets": dict,
    "listings": dict,
    "job": dict,
    "config": dict,
    "parts": list,
    "rows": int,
    "errors": int,
}
#: Fields (by path) whose values are one object per model or dataset name.
METADATA_MAPS = (("models",), ("datasets",), ("job", "models"), ("config", "models"))


def check_metadata(metadata: Any, path: str | os.PathLike[str]) -> None:
    """Refuse, in one line naming the file, metadata that is not what the writer writes (a JSON list,
    a field of another type): readers would otherwise fail deep inside with an AttributeError."""

    def json_type(value: Any) -> str:
        names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
        return names.get(type(value), "a number")

    def refuse(what: str) -> None:
        raise ValueError(
            f"{path}: its img_search metadata is damaged ({what}); embed the table again"
        )

    if not isinstance(metadata, dict):
        refuse(f"{json_type(metadata)}, not an object")
    for name, kind in METADATA_TYPES.items():
        value = metadata.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            refuse(f"{name} is {json_type(value)}")
    if not all(isinstance(part, str) for part in metadata.get("parts") or []):
        refuse("parts holds something else than file names")
    for keys in METADATA_MAPS:
        value: Any = metadata
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        if not isinstance(value, dict):
            refuse(f"{'.'.join(keys)} is {json_type(value)}")
        for name, entry in value.items():
            if entry is not None and not isinstance(entry, dict):
                refuse(f"{'.'.join(keys)}.{name} is {json_type(entry)}")


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
    for group in selection_row_groups(path, model_name, dataset_name, columns):
        yield from group.batches(batch_rows)


@dataclass(frozen=True)
class RowGroupRead:
    """One row group of a selection, read on its own (so that threads can decode several at once)."""

    file: Path
    metadata: pq.FileMetaData
    group: int
    columns: tuple[str, ...]  # what ``batches`` yields
    #: None when every row of the group is selected, else the rows to keep
    condition: pc.Expression | None
    read: tuple[str, ...]  # the columns read: ``columns`` and those the condition needs

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        with pq.ParquetFile(
            self.file, metadata=self.metadata, memory_map=False, pre_buffer=False, buffer_size=2**20
        ) as parquet:
            read = list(self.read)
            for batch in parquet.iter_batches(batch_rows, row_groups=[self.group], columns=read):
                if self.condition is not None:
                    batch = batch.filter(self.condition).select(list(self.columns))
                if batch.num_rows:
                    yield batch


def selection_row_groups(
    path: str | os.PathLike[str],
    model_name: str | None,
    dataset_name: str | None,
    columns: Sequence[str] = (S.ID, S.EMBEDDING),
) -> Iterator[RowGroupRead]:
    """The row groups that hold rows of one selection, in table order."""
    conditions = {S.MODEL: model_name, S.DATASET: dataset_name}
    conditions = {column: value for column, value in conditions.items() if value is not None}
    expression = selection_filter(model_name, dataset_name)
    for file in table_files(path):
        metadata = pq.read_metadata(file)
        for group in range(metadata.num_row_groups):
            match = _row_group_match(metadata.row_group(group), conditions)
            if match is False:
                continue
            read = (*columns, *(() if match else (c for c in conditions if c not in columns)))
            condition = None if match else expression
            yield RowGroupRead(file, metadata, group, tuple(columns), condition, tuple(read))


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
