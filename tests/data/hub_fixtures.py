"""Hub-style Parquet files for the dataset tests, and the two ways a 🤗 image dataset is read.

Image ``n`` of these files is ``tiny_jpeg(n)``, in a struct column
(``{"bytes", "path"}``) as 🤗 writes images. ``both_paths`` builds a dataset
reading its Parquet files directly and again through 🤗's Arrow cache, and
asserts both give the same listing, ids and sources.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from img_search.data import HubImageDataset, hub
from img_search.testing.fixtures import jpeg_bytes, synthetic_image

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def keep_datasets_cache_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the Arrow cache of these small datasets out of the user's ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", folder / "hf_datasets_cache")


def all_ids(dataset) -> list[str]:
    return [item.id for item in dataset]


@functools.cache
def tiny_jpeg(index: int) -> bytes:
    return jpeg_bytes(synthetic_image(index, (8, 8)))


def struct_source(n: int) -> dict:
    return {"bytes": tiny_jpeg(n), "path": f"pic{n}.jpg"}


def write_groups(path: Path, tables: list[pa.Table]) -> Path:
    """One Parquet file, one row group per table (so row groups of several sizes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, tables[0].schema) as writer:
        for table in tables:
            writer.write_table(table)
    return path


def image_rows(numbers: list[int], keys: list[str]) -> pa.Table:
    """Rows of a Hub-style struct image column (image ``n`` is ``tiny_jpeg(n)``) and a ``key``."""
    images = [{"bytes": tiny_jpeg(n), "path": f"pic{n}.jpg"} for n in numbers]
    return pa.table({"image": pa.array(images, IMAGE_STRUCT), "key": pa.array(keys, pa.string())})


def write_hub_layout(root: Path) -> Path:
    """A Hub-layout folder: ``train`` in two files, ``test`` in one; row groups of 1 to 4 rows.

    Image ``n`` is row ``n``; keys repeat within and across files and splits.
    """
    data = root / "hub" / "data"
    write_groups(
        data / "train-00000-of-00002.parquet",
        [
            image_rows([0, 1, 2], ["a", "b", "a"]),
            image_rows([3], ["c"]),
            image_rows([4, 5, 6, 7], ["d", "b", "e", "f"]),
        ],
    )
    write_groups(
        data / "train-00001-of-00002.parquet",
        [image_rows([8, 9], ["g", "c"]), image_rows([10, 11, 12], ["h", "i", "j"])],
    )
    write_groups(
        data / "test-00000-of-00001.parquet",
        [image_rows([13, 14], ["x", "a"]), image_rows([15], ["y"])],
    )
    return root / "hub"


def build_via(
    dataset: HubImageDataset, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> HubImageDataset:
    """Build reading the Parquet files directly, or (``direct=False``) through 🤗's cache."""
    with monkeypatch.context() as patch:
        if not direct:
            patch.setattr(hub, "local_parquet_files", lambda *args, **kwargs: None)
        dataset.build()
    assert (dataset._parquet is not None) == direct
    assert (dataset._table is None) == direct
    return dataset


def contents(dataset: HubImageDataset) -> tuple:
    items = [dataset.get(p) for p in range(dataset.length())]
    return (
        dataset.listing(),
        dataset.item_ids(),
        [item.id for item in items],
        [item.source for item in items],
    )


def both_paths(monkeypatch: pytest.MonkeyPatch, make: Callable[[], HubImageDataset]) -> tuple:
    """``contents`` of ``make()`` built directly, asserted equal to the same built through 🤗."""
    direct = contents(build_via(make(), monkeypatch, direct=True))
    assert direct == contents(build_via(make(), monkeypatch, direct=False))
    return direct
