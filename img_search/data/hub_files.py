"""The files of a 🤗 dataset: a Hub id, a local copy in the Hub layout, or Parquet file(s).

``load_hf_splits`` loads through 🤗 ``datasets`` (its Arrow cache, or a
stream); ``local_parquet_files`` names the data files 🤗 would read, in its
order, where they are all local Parquet, so that they can be read directly
(``parquet_rows``) without a second copy on disk. A stream is read one data
file at a time (``file_shards``, ``rows_of``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from img_search.data.mapped_pages import release_pages
from img_search.failures import prepare_hub

log = logging.getLogger(__name__)

#: A split name, not a 🤗 split expression (``train[:10%]``, ``train+test``).
PLAIN_SPLIT = re.compile(r"[\w.-]+")


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
    if not local.exists():
        prepare_hub(path)
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
    """Load and concatenate ``splits`` of a Hub dataset, a local dataset folder or Parquet file(s).

    The pages of the Arrow cache that opening it touched are handed back
    (``mapped_pages``): the process's memory does not start at the size of
    the dataset.
    """
    import datasets

    parts = load_hf_splits(path, splits, streaming=streaming, revision=revision)
    table = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if not streaming:
        release_pages(f["filename"] for f in table.cache_files)
    return table


def local_parquet_files(
    path: str, splits: Sequence[str], revision: str | None = None
) -> tuple[list[str], pa.Schema | None] | None:
    """The data files ``load_hf_splits`` would read for ``splits``, in its order, if all are local Parquet.

    A local file is read as Parquet (as ``load_hf_splits`` does); a local
    folder is resolved by 🤗's own builder (its ``data_files`` per split),
    kept only when that builder is the Parquet one. None for anything else (a
    Hub id, a missing path, a folder of other data, a split expression): those
    load through 🤗. A split the folder does not have raises 🤗's error.
    With the files comes the Arrow schema of the features the folder declares
    (its README), if it declares any: 🤗 would cast the data to it.
    """
    local = Path(path).expanduser()
    if not local.exists():
        return None
    if local.is_file():
        return [str(local)], None
    if not local.is_dir():
        return None
    import datasets
    from datasets.packaged_modules.parquet.parquet import Parquet

    try:
        builder = datasets.load_dataset_builder(str(local), revision=revision)
    except Exception as exc:  # 🤗's load gives its own error, as it always has
        log.debug("no Parquet builder for %s: %s", path, exc)
        return None
    config = builder.config
    if not isinstance(builder, Parquet) or config.filters is not None or config.columns is not None:
        return None
    data_files = config.data_files or {}
    files: list[str] = []
    for split in splits:
        if split not in data_files:
            if PLAIN_SPLIT.fullmatch(split):  # the error 🤗 gives after converting the data
                raise ValueError(f'Unknown split "{split}". Should be one of {list(data_files)}.')
            return None
        files += [str(f) for f in data_files[split]]
    if not all(Path(f).is_file() for f in files):
        return None
    features = builder.info.features
    return files, None if features is None else features.arrow_schema


def file_shards(splits: list[Any]) -> list[Any]:
    """A streaming dataset per data file (per 🤗 shard), splits in order: one file, one shard."""
    return [
        split.shard(num_shards=split.num_shards, index=i, contiguous=True)
        for split in splits
        for i in range(split.num_shards)
    ]


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
