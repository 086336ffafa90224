"""Image datasets read through 🤗 ``datasets``: a Hub id, a local copy in the Hub layout, or Parquet.

One loader serves INQUIRE, Flickr30k and any other Hub image dataset, so the
same code path reads the real dataset in production and a local fixture in
tests (``datasets.inquire.path=/local/copy``).

Where every data file of the requested splits is local Parquet, the rows are
read from those files directly (``parquet_rows``), not through 🤗's Arrow
cache: the same files in the same order as 🤗 would read, so the same ids,
order and sources, without a second copy of the data on disk nor its mapped
pages in memory. Finding and loading those files is ``hub_files``'s job;
which rows are items (ids, first occurrences, a wanted subset) is
``id_filters``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from img_search.data.base import ImageDataset, ImageItem, Shard, fingerprint_arrays
from img_search.data.hub_files import (
    file_shards,
    load_hf_dataset,
    load_hf_splits,
    local_parquet_files,
    rows_of,
)
from img_search.data.id_filters import ID_TRANSFORMS, read_id_list, rows_to_keep, transform_ids
from img_search.data.mapped_pages import release_pages
from img_search.data.parquet_rows import DirectReadDeclined, ParquetRows

log = logging.getLogger(__name__)


class HubImageDataset(ImageDataset):
    """Any image dataset that 🤗 ``datasets`` can load, one row per image (or per query-image pair).

    Rows whose id was seen before are skipped (``dedupe``), so an image that
    appears in several rows is embedded once; the first occurrence wins and
    dataset order is kept.
    """

    kind = "hf_images"

    def __init__(
        self,
        name: str,
        path: str,
        splits: Sequence[str] | str = ("train",),
        image_column: str = "image",
        id_column: str | None = None,
        id_transform: str = "none",
        dedupe: bool = True,
        streaming: bool = False,
        revision: str | None = None,
        ids: Sequence[str] | None = None,
        ids_file: str | None = None,
    ) -> None:
        super().__init__(name)
        if not path:
            raise ValueError(
                f"datasets.{name}.path is empty: give a Hub id, a folder or a .parquet file"
            )
        if id_transform not in ID_TRANSFORMS:
            raise ValueError(f"datasets.{name}.id_transform must be one of {sorted(ID_TRANSFORMS)}")
        self.path = str(path)
        self.splits = [splits] if isinstance(splits, str) else list(splits)
        self.image_column = image_column
        self.id_column = id_column
        self.id_transform = id_transform
        self.dedupe = dedupe
        self.streaming = streaming
        self.revision = revision
        self._keep = read_id_list(ids, ids_file)
        self._table: Any = None  # 🤗 path: the image column (and ids) of every row
        self._parquet: ParquetRows | None = None  # direct path: the rows of the Parquet files
        self._rows: np.ndarray | None = None
        self._files: list[Any] = []  # streaming: one dataset per data file
        self._offsets = np.zeros(0, dtype=np.int64)  # streaming: first row number of each file
        self._stream_keep: list[np.ndarray] = []  # streaming: which rows of each file are items
        self._stream_ids: list[pa.ChunkedArray] = []  # streaming: the id of each row of each file
        self._ids = pa.chunked_array([], pa.string())  # the id of each item (not streaming)
        self._stream_listing = (0, "")
        self.random_access = not streaming  # type: ignore[misc]

    # -- building ---------------------------------------------------------
    def build(self) -> None:
        if self.streaming:
            self._build_stream()
            return
        parquet = self._parquet_rows()
        if parquet is not None:
            self._check_columns(parquet.column_names)
            self._rows = self._select_rows(
                self._ids_of_rows(parquet.num_rows, lambda: parquet.column(self.id_column))
            )
            self._table, self._parquet = None, parquet
            log.info(
                "dataset %s: %d items from %d rows in %d Parquet files",
                self.name,
                len(self._rows),
                parquet.num_rows,
                len(parquet.files),
            )
            return
        table = load_hf_dataset(self.path, self.splits, revision=self.revision)
        self._check_columns(table.column_names)
        self._table, self._parquet = self._image_rows(table), None
        self._rows = self._select_rows(
            self._ids_of_rows(len(table), lambda: table.data.column(self.id_column))
        )
        # the items' ids are a copy; reading them touched every record batch of the mapped cache
        release_pages(f["filename"] for f in table.cache_files)
        log.info("dataset %s: %d items from %d rows", self.name, len(self._rows), len(table))

    def _parquet_rows(self) -> ParquetRows | None:
        """The rows of the splits' data files, read directly, where they are all local Parquet."""
        found = local_parquet_files(self.path, self.splits, self.revision)
        if found is None:
            return None
        files, declared = found
        columns = [c for c in (self.image_column, self.id_column) if c]
        try:
            rows = ParquetRows(files, columns=columns, image_column=self.image_column)
            if declared is not None and self.id_column in declared.names:
                stored = (
                    rows.schema.field(self.id_column).type
                    if self.id_column in rows.schema.names
                    else None
                )
                if declared.field(self.id_column).type != stored:
                    raise DirectReadDeclined(
                        f"the dataset declares column {self.id_column!r} as "
                        f"{declared.field(self.id_column).type}, the files hold {stored}"
                    )
        except DirectReadDeclined as why:
            log.info("dataset %s: read through 🤗 datasets' cache: %s", self.name, why)
            return None
        return rows

    def _image_rows(self, table: Any) -> Any:
        """Only the image and id columns, images as undecoded ``{"bytes", "path"}``."""
        import datasets

        table = table.select_columns([c for c in (self.image_column, self.id_column) if c])
        return table.cast_column(self.image_column, datasets.Image(decode=False))

    def _check_columns(self, columns: list[str] | None) -> None:
        if columns is None:
            return
        for column in [self.image_column, self.id_column]:
            if column is not None and column not in columns:
                raise ValueError(
                    f"dataset {self.name} ({self.path}) has no column {column!r}; "
                    f"columns are {columns}"
                )

    def _build_stream(self) -> None:
        """One shard per data file; which rows to keep (first occurrence, wanted ids) from the ids alone.

        The ids are read once, by column where the format allows, so each
        shard then reads only its own file, and only once.
        """
        splits = load_hf_splits(self.path, self.splits, streaming=True, revision=self.revision)
        self._check_columns(splits[0].column_names)
        self._files = [self._image_rows(f) for f in file_shards(splits)]
        counts, ids = self._ids_of_files(splits)
        self._offsets = np.cumsum([0, *counts])[:-1].astype(np.int64)
        keep = rows_to_keep(ids, self.dedupe, self._keep)
        bounds = list(zip(self._offsets, counts, strict=True))
        self._stream_keep = [keep[o : o + n] for o, n in bounds]
        self._stream_ids = [ids.slice(o, n) for o, n in bounds]
        self._stream_listing = (int(keep.sum()), fingerprint_arrays(ids.filter(pa.array(keep))))
        log.info(
            "dataset %s: %d items in %d files (streaming)",
            self.name,
            self._stream_listing[0],
            len(counts),
        )

    def _ids_of_files(self, splits: list[Any]) -> tuple[list[int], pa.ChunkedArray]:
        """Rows per file, and every row's id, reading only the id column where the format allows."""
        import datasets

        column = self.id_column or self.image_column
        try:
            projected = load_hf_splits(
                self.path, self.splits, streaming=True, revision=self.revision, columns=[column]
            )
        except (TypeError, ValueError):  # not Parquet: read the rows, keep the column
            projected = [split.select_columns([column]) for split in splits]
        if self.id_column is None:  # only counted, not decoded
            projected = [p.cast_column(column, datasets.Image(decode=False)) for p in projected]
        counts, chunks = [], []
        for stream in file_shards(projected):
            values = [v for batch in stream.iter(batch_size=1024) for v in batch[column]]
            counts.append(len(values))
            if self.id_column is not None:
                chunks.append(transform_ids(pa.array(values), self.id_transform))
        if self.id_column is None:
            return counts, pa.chunked_array([pa.array(np.arange(sum(counts)).astype(str))])
        return counts, pa.chunked_array([c for chunk in chunks for c in chunk.chunks], pa.string())

    def _select_rows(self, ids: pa.ChunkedArray) -> np.ndarray:
        """The rows that are items, and their ids (``take`` copies them out of the mapped cache)."""
        rows = np.flatnonzero(rows_to_keep(ids, self.dedupe, self._keep))
        self._ids = ids.take(pa.array(rows))
        if self._keep is not None:
            missing = len(self._keep) - len(rows)
            if missing > 0:
                log.warning("dataset %s: %d requested ids are not in the data", self.name, missing)
        return rows.astype(np.int64)

    def _ids_of_rows(self, count: int, id_values: Callable[[], pa.ChunkedArray]) -> pa.ChunkedArray:
        """Every row's id: ``id_values()`` transformed, or the row numbers without an id column."""
        if self.id_column is None:
            return pa.chunked_array([pa.array(np.arange(count).astype(str))])
        return transform_ids(id_values(), self.id_transform)

    # -- access -------------------------------------------------------------
    def length(self) -> int | None:
        if self._rows is not None:
            return len(self._rows)
        return None

    def get(self, position: int) -> ImageItem:
        if self._rows is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        row_index = int(self._rows[position])
        if self._parquet is not None:
            source = self._parquet.row(row_index, self.image_column)
        else:
            source = self._table[row_index][self.image_column]
        return ImageItem(id=self._ids[position].as_py(), source=source)

    def item_ids(self) -> list[str]:
        if self._rows is None:
            return super().item_ids()  # a stream: read it through
        return self._ids.to_pylist()

    def listing(self) -> tuple[int, str]:
        if self.streaming:
            return self._stream_listing
        if self._rows is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        return len(self._rows), fingerprint_arrays(self._ids)

    def shards(self, shard_size: int, unit: int = 0) -> list[Shard]:
        if not self.streaming:
            return super().shards(shard_size, unit)
        return [
            Shard(i, 0, len(keep), label=f"file {i}") for i, keep in enumerate(self._stream_keep)
        ]

    def items(self, shard: Shard, start: int, stop: int) -> Iterator[tuple[int, ImageItem]]:
        if not self.streaming:
            yield from super().items(shard, start, stop)
            return
        keep, ids = self._stream_keep[shard.index], self._stream_ids[shard.index]
        for row_index, row in enumerate(rows_of(self._files[shard.index])):
            if row_index >= stop:
                return
            if row_index >= start and keep[row_index]:
                item_id = ids[row_index].as_py()
                yield row_index, ImageItem(id=item_id, source=row[self.image_column])

    def __iter__(self) -> Iterator[ImageItem]:
        if not self.streaming:
            yield from super().__iter__()
            return
        for shard in self.shards(1):
            for _, item in self.items(shard, shard.start, shard.stop):
                yield item

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "splits": self.splits,
            "image_column": self.image_column,
            "id_column": self.id_column,
            "streaming": self.streaming,
            "revision": self.revision,
        }
