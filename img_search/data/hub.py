"""Image datasets read through 🤗 ``datasets``: a Hub id, a local copy in the Hub layout, or Parquet.

One loader serves INQUIRE, Flickr30k and any other Hub image dataset, so the
same code path reads the real dataset in production and a local fixture in
tests (``datasets.inquire.path=/local/copy``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from img_search.data.base import ImageDataset, ImageItem, Shard, fingerprint_arrays

log = logging.getLogger(__name__)

ID_TRANSFORMS = {
    "none": lambda value: str(value),
    "stem": lambda value: PurePosixPath(str(value)).stem,
}


def looks_like_local_path(path: str) -> bool:
    """A Hub id is ``owner/name``; anything else that is not an existing directory is a path."""
    if Path(path).expanduser().exists():
        return True
    return (
        path.startswith(("/", "./", "../", "~")) or path.endswith(".parquet") or path.count("/") > 1
    )


def load_hf_splits(
    path: str,
    splits: Sequence[str],
    *,
    streaming: bool = False,
    revision: str | None = None,
    columns: Sequence[str] | None = None,
) -> list[Any]:
    """One 🤗 dataset per split of a Hub dataset, a local dataset folder or Parquet file(s).

    ``columns`` reads only those columns where the format allows it (Parquet),
    so listing the ids of a stream does not read its images.
    """
    import datasets

    if looks_like_local_path(path) and not Path(path).expanduser().exists():
        raise FileNotFoundError(f"dataset path not found: {path}")
    local = Path(path).expanduser()
    extra = {"columns": list(columns)} if columns else {}
    if local.is_file() or path.endswith(".parquet"):
        return [
            datasets.load_dataset(
                "parquet", data_files=str(local), split="train", streaming=streaming, **extra
            )
        ]
    source = str(local) if local.exists() else path
    return [
        datasets.load_dataset(source, split=split, streaming=streaming, revision=revision, **extra)
        for split in splits
    ]


def load_hf_dataset(
    path: str,
    splits: Sequence[str],
    *,
    streaming: bool = False,
    revision: str | None = None,
) -> Any:
    """Load and concatenate ``splits`` of a Hub dataset, a local dataset folder or Parquet file(s)."""
    import datasets

    parts = load_hf_splits(path, splits, streaming=streaming, revision=revision)
    if len(parts) == 1:
        return parts[0]
    return datasets.concatenate_datasets(parts)


def file_shards(splits: list[Any]) -> list[Any]:
    """A streaming dataset per data file (per 🤗 shard), splits in order: one file, one shard."""
    return [
        split.shard(num_shards=split.num_shards, index=i, contiguous=True)
        for split in splits
        for i in range(split.num_shards)
    ]


def read_id_list(ids: Iterable[str] | None, ids_file: str | None) -> set[str] | None:
    """The optional subset of ids to keep, from config inline or a file with one id a line."""
    if ids is None and not ids_file:
        return None
    keep = {str(i) for i in ids or ()}
    if ids_file:
        file = Path(ids_file).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"id list file not found: {ids_file}")
        keep.update(line.strip() for line in file.read_text().splitlines() if line.strip())
    return keep


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
        self._table: Any = None
        self._rows: np.ndarray | None = None
        self._files: list[Any] = []  # streaming: one dataset per data file
        self._offsets = np.zeros(0, dtype=np.int64)  # streaming: first row number of each file
        self._stream_keep: list[np.ndarray] = []  # streaming: which rows of each file are items
        self._stream_listing = (0, "")
        self.random_access = not streaming  # type: ignore[misc]

    # -- building ---------------------------------------------------------
    def build(self) -> None:
        if self.streaming:
            self._build_stream()
            return
        table = load_hf_dataset(self.path, self.splits, revision=self.revision)
        self._check_columns(table.column_names)
        self._table = self._image_rows(table)
        self._rows = self._select_rows(table)
        log.info("dataset %s: %d items from %d rows", self.name, len(self._rows), len(table))

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
        id_files = self._id_files(splits)
        ids = [self._ids_of_file(f) for f in id_files]
        self._offsets = np.cumsum([0] + [len(i) for i in ids])[:-1].astype(np.int64)
        if self.id_column is None:
            ids = [
                pa.array(np.arange(o, o + len(i)).astype(str))
                for o, i in zip(self._offsets, ids, strict=True)
            ]
        everything = pa.chunked_array(ids, pa.string())
        keep = np.ones(len(everything), dtype=bool)
        if self.dedupe:
            first = pa.table({"id": everything, "row": np.arange(len(everything))})
            first = first.group_by("id", use_threads=False).aggregate([("row", "min")])
            keep[:] = False
            keep[first.column("row_min").to_numpy()] = True
        if self._keep is not None:
            keep &= pc.is_in(everything, pa.array(sorted(self._keep), pa.string())).to_numpy(
                zero_copy_only=False
            )
        self._stream_keep = [keep[o : o + len(i)] for o, i in zip(self._offsets, ids, strict=True)]
        self._stream_listing = (
            int(keep.sum()),
            fingerprint_arrays(everything.filter(pa.array(keep))),
        )
        log.info(
            "dataset %s: %d items in %d files (streaming)",
            self.name,
            self._stream_listing[0],
            len(ids),
        )

    def _id_files(self, splits: list[Any]) -> list[Any]:
        """Per file, a stream of only the id column (or of the images, to count rows, without one)."""
        column = self.id_column or self.image_column
        try:
            projected = load_hf_splits(
                self.path, self.splits, streaming=True, revision=self.revision, columns=[column]
            )
        except (TypeError, ValueError):  # not Parquet: read the rows, keep the column
            projected = [split.select_columns([column]) for split in splits]
        if self.id_column is None:
            import datasets

            projected = [p.cast_column(column, datasets.Image(decode=False)) for p in projected]
        return file_shards(projected)

    def _ids_of_file(self, stream: Any) -> pa.Array:
        values: list[Any] = []
        column = self.id_column or self.image_column
        for batch in stream.iter(batch_size=1024):
            values.extend(batch[column] if self.id_column else [None] * len(batch[column]))
        if self.id_column is None:
            return pa.nulls(len(values), pa.string())
        transform = ID_TRANSFORMS[self.id_transform]
        return pa.array([transform(v) for v in values], pa.string())

    def _select_rows(self, table: Any) -> np.ndarray:
        ids = self._ids_of_rows(table)
        if self.dedupe:
            _, first = np.unique(ids, return_index=True)
            rows = np.sort(first)
        else:
            rows = np.arange(len(ids))
        if self._keep is not None:
            rows = rows[np.isin(ids[rows], np.array(sorted(self._keep), dtype=object))]
            missing = len(self._keep) - len(rows)
            if missing > 0:
                log.warning("dataset %s: %d requested ids are not in the data", self.name, missing)
        return rows.astype(np.int64)

    def _ids_of_rows(self, table: Any) -> np.ndarray:
        if self.id_column is None:
            return np.array([str(i) for i in range(len(table))], dtype=object)
        raw = table.data.column(self.id_column).to_pylist()
        transform = ID_TRANSFORMS[self.id_transform]
        return np.array([transform(v) for v in raw], dtype=object)

    # -- access -------------------------------------------------------------
    def length(self) -> int | None:
        if self._rows is not None:
            return len(self._rows)
        return None

    def get(self, position: int) -> ImageItem:
        if self._rows is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        row_index = int(self._rows[position])
        row = self._table[row_index]
        return ImageItem(id=self._id_of(row, row_index), source=row[self.image_column])

    def item_ids(self) -> list[str]:
        if self._rows is None:
            return super().item_ids()  # a stream: read it through
        return [str(i) for i in self._ids_of_rows(self._table)[self._rows]]

    def listing(self) -> tuple[int, str]:
        if self.streaming:
            return self._stream_listing
        return super().listing()

    def shards(self, shard_size: int) -> list[Shard]:
        if not self.streaming:
            return super().shards(shard_size)
        return [
            Shard(i, 0, len(keep), label=f"file {i}") for i, keep in enumerate(self._stream_keep)
        ]

    def items(self, shard: Shard, start: int, stop: int) -> Iterator[tuple[int, ImageItem]]:
        if not self.streaming:
            yield from super().items(shard, start, stop)
            return
        keep, offset = self._stream_keep[shard.index], int(self._offsets[shard.index])
        for row_index, row in enumerate(rows_of(self._files[shard.index])):
            if row_index >= stop:
                return
            if row_index >= start and keep[row_index]:
                item_id = self._id_of(row, offset + row_index)
                yield row_index, ImageItem(id=item_id, source=row[self.image_column])

    def __iter__(self) -> Iterator[ImageItem]:
        if not self.streaming:
            yield from super().__iter__()
            return
        for shard in self.shards(1):
            for _, item in self.items(shard, shard.start, shard.stop):
                yield item

    def _id_of(self, row: dict[str, Any], row_index: int) -> str:
        if self.id_column is None:
            return str(row_index)
        return ID_TRANSFORMS[self.id_transform](row[self.id_column])

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


def rows_of(stream: Any, batch_size: int = 64) -> Iterator[dict[str, Any]]:
    """Every row of a streaming dataset as a dict, also inside a DataLoader worker.

    Iterating a streaming ``datasets.IterableDataset`` directly inside a loader
    worker silently hands each worker only part of it; ``.iter()`` does not
    re-shard.
    """
    for batch in stream.iter(batch_size=batch_size):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns), strict=True):
            yield dict(zip(columns, values, strict=True))
