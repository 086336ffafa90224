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

from img_search.data.base import ImageDataset, ImageItem

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


def load_hf_dataset(
    path: str,
    splits: Sequence[str],
    *,
    streaming: bool = False,
    revision: str | None = None,
) -> Any:
    """Load and concatenate ``splits`` of a Hub dataset, a local dataset folder or Parquet file(s)."""
    import datasets

    if looks_like_local_path(path) and not Path(path).expanduser().exists():
        raise FileNotFoundError(f"dataset path not found: {path}")
    local = Path(path).expanduser()
    if local.is_file() or path.endswith(".parquet"):
        parts = [
            datasets.load_dataset(
                "parquet", data_files=str(local), split="train", streaming=streaming
            )
        ]
    else:
        source = str(local) if local.exists() else path
        parts = [
            datasets.load_dataset(source, split=split, streaming=streaming, revision=revision)
            for split in splits
        ]
    if len(parts) == 1:
        return parts[0]
    return datasets.concatenate_datasets(parts)


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
        self.random_access = not streaming  # type: ignore[misc]

    # -- building ---------------------------------------------------------
    def build(self) -> None:
        import datasets

        table = load_hf_dataset(
            self.path, self.splits, streaming=self.streaming, revision=self.revision
        )
        columns = table.column_names
        if columns is not None:
            for column in [self.image_column, self.id_column]:
                if column is not None and column not in columns:
                    raise ValueError(
                        f"dataset {self.name} ({self.path}) has no column {column!r}; "
                        f"columns are {columns}"
                    )
            table = table.select_columns([c for c in (self.image_column, self.id_column) if c])
        table = table.cast_column(self.image_column, datasets.Image(decode=False))
        self._table = table
        if not self.streaming:
            self._rows = self._select_rows(table)
            log.info("dataset %s: %d items from %d rows", self.name, len(self._rows), len(table))

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

    def __iter__(self) -> Iterator[ImageItem]:
        if not self.streaming:
            yield from super().__iter__()
            return
        seen: set[str] = set()
        for row_index, row in enumerate(self._rows_of_stream()):
            item_id = self._id_of(row, row_index)
            if self.dedupe:
                if item_id in seen:
                    continue
                seen.add(item_id)
            if self._keep is not None and item_id not in self._keep:
                continue
            yield ImageItem(id=item_id, source=row[self.image_column])

    def _rows_of_stream(self, batch_size: int = 64) -> Iterator[dict[str, Any]]:
        """Every row of the stream, in order, also inside a DataLoader worker.

        Iterating a streaming ``datasets.IterableDataset`` directly inside a
        loader worker silently hands each worker only some of its shards; the
        run machinery shards by position itself, so it needs the whole
        stream. ``.iter()`` does not re-shard. The price: every (rank, worker)
        reads the stream, and skips the rows that are not its own before
        decoding them.
        """
        for batch in self._table.iter(batch_size=batch_size):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns), strict=True):
                yield dict(zip(columns, values, strict=True))

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
