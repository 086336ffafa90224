"""hf_images (HubImageDataset): any 🤗 image dataset, read directly from local Parquet or through 🤗."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_fixtures import (
    all_ids,
    both_paths,
    build_via,
    contents,
    keep_datasets_cache_in,
    struct_source,
    tiny_jpeg,
    write_hub_layout,
)

from img_search.data import HubImageDataset, get_dataset, hub, parquet_rows
from img_search.images import open_image
from img_search.testing.fixtures import jpeg_bytes, synthetic_image


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    keep_datasets_cache_in(tmp_path_factory.getbasetemp(), monkeypatch)


@pytest.fixture
def hub_layout(tmp_path: Path) -> Path:
    return write_hub_layout(tmp_path)


@pytest.fixture
def parquet_file(tmp_path: Path) -> Path:
    import datasets

    features = datasets.Features(
        {
            "picture": datasets.Image(),
            "key": datasets.Value("string"),
            "label": datasets.Value("int64"),
        }
    )
    rows = {
        "picture": [
            {"bytes": jpeg_bytes(synthetic_image(i, (24, 24))), "path": None} for i in range(5)
        ],
        "key": ["k-a", "k-b", "k-a", "k-c", "k-d"],
        "label": [0, 1, 2, 3, 4],
    }
    path = tmp_path / "images.parquet"
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path


def test_hf_images_parquet_ids_from_a_column_keep_the_first_of_each(parquet_file: Path) -> None:
    dataset = get_dataset(
        {
            "dataset": "hf_images",
            "path": str(parquet_file),
            "image_column": "picture",
            "id_column": "key",
        },
        name="mine",
    )
    assert isinstance(dataset, HubImageDataset)
    assert dataset.name == "mine"
    dataset.build()
    assert dataset.length() == 4  # k-a repeats; first occurrence wins
    assert all_ids(dataset) == ["k-a", "k-b", "k-c", "k-d"]
    first = open_image(dataset.get(0).source)
    np.testing.assert_array_equal(
        np.asarray(first), np.asarray(open_image(jpeg_bytes(synthetic_image(0, (24, 24)))))
    )
    # Row 3 ("k-c") is image 3, not image 2 (the duplicate that was dropped).
    assert dataset.get(2).source["bytes"] == jpeg_bytes(synthetic_image(3, (24, 24)))


def test_hf_images_parquet_without_dedupe_keeps_every_row(parquet_file: Path) -> None:
    dataset = HubImageDataset(
        "mine", path=str(parquet_file), image_column="picture", id_column="key", dedupe=False
    )
    dataset.build()
    assert all_ids(dataset) == ["k-a", "k-b", "k-a", "k-c", "k-d"]


def test_hf_images_parquet_without_an_id_column_numbers_the_rows(parquet_file: Path) -> None:
    dataset = HubImageDataset(
        "mine", path=str(parquet_file), image_column="picture", id_column=None
    )
    dataset.build()
    assert dataset.length() == 5
    assert all_ids(dataset) == ["0", "1", "2", "3", "4"]
    assert dataset.get(4).source["bytes"] == jpeg_bytes(synthetic_image(4, (24, 24)))
    streamed = HubImageDataset(
        "mine", path=str(parquet_file), image_column="picture", id_column=None, streaming=True
    )
    streamed.build()
    assert all_ids(streamed) == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("option", ["id_column", "image_column"])
def test_hf_images_unknown_column_lists_the_columns(parquet_file: Path, option: str) -> None:
    options = {"image_column": "picture", "id_column": "key", option: "nonexistent"}
    dataset = HubImageDataset("mine", path=str(parquet_file), **options)
    with pytest.raises(ValueError) as info:
        dataset.build()
    message = str(info.value)
    assert "'nonexistent'" in message
    for column in ("picture", "key", "label"):
        assert column in message


def test_hf_images_missing_parquet_names_the_file(tmp_path: Path) -> None:
    dataset = HubImageDataset("mine", path=str(tmp_path / "absent.parquet"))
    with pytest.raises(FileNotFoundError, match=r"absent\.parquet"):
        dataset.build()


def test_hf_images_refuses_an_empty_path_and_an_unknown_id_transform() -> None:
    with pytest.raises(ValueError, match="path is empty"):
        HubImageDataset("mine", path="")
    with pytest.raises(ValueError, match="id_transform"):
        HubImageDataset("mine", path="owner/name", id_transform="upper")


def test_hf_images_get_before_build_says_build_first(parquet_file: Path) -> None:
    dataset = HubImageDataset("mine", path=str(parquet_file), image_column="picture")
    with pytest.raises(RuntimeError, match="build"):
        dataset.get(0)


# -- local Parquet read directly, without 🤗's Arrow cache --------------------------


def test_direct_folder_reads_the_splits_in_the_order_given_then_each_file(
    hub_layout: Path, monkeypatch
) -> None:
    def make() -> HubImageDataset:
        return HubImageDataset(
            "mine", path=str(hub_layout), splits=["test", "train"], id_column="key"
        )

    _, ids, item_ids, sources = both_paths(monkeypatch, make)
    # test rows first (the order given), then train's files in order; first occurrence wins
    assert ids == item_ids == ["x", "a", "y", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    assert sources == [struct_source(n) for n in (13, 14, 15, 1, 3, 4, 6, 7, 8, 10, 11, 12)]
    assert open_image(sources[0]).size == (8, 8)


def test_direct_folder_keeps_every_row_without_dedupe_and_only_the_ids_asked(
    hub_layout: Path, monkeypatch
) -> None:
    def every_row() -> HubImageDataset:
        return HubImageDataset("mine", path=str(hub_layout), id_column="key", dedupe=False)

    _, ids, _, sources = both_paths(monkeypatch, every_row)
    assert ids == ["a", "b", "a", "c", "d", "b", "e", "f", "g", "c", "h", "i", "j"]
    assert sources == [struct_source(n) for n in range(13)]

    def some_ids() -> HubImageDataset:
        return HubImageDataset(
            "mine", path=str(hub_layout), id_column="key", ids=["j", "c", "a", "nope"]
        )

    _, ids, _, sources = both_paths(monkeypatch, some_ids)
    assert ids == ["a", "c", "j"]
    assert sources == [struct_source(n) for n in (0, 3, 12)]


def test_direct_folder_without_an_id_column_numbers_the_rows(hub_layout: Path, monkeypatch) -> None:
    def numbered() -> HubImageDataset:
        return HubImageDataset("mine", path=str(hub_layout), splits="train", id_column=None)

    _, ids, _, sources = both_paths(monkeypatch, numbered)
    assert ids == [str(n) for n in range(13)]
    assert sources == [struct_source(n) for n in range(13)]


def test_direct_unknown_split_gives_the_huggingface_error(hub_layout: Path, monkeypatch) -> None:
    errors = []
    for direct in (True, False):
        dataset = HubImageDataset("mine", path=str(hub_layout), splits=["train", "nope"])
        with monkeypatch.context() as patch:
            if not direct:
                patch.setattr(hub, "local_parquet_files", lambda *args, **kwargs: None)
            with pytest.raises(ValueError) as info:
                dataset.build()
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    assert errors[0].startswith('Unknown split "nope". Should be one of [')


def test_direct_parquet_file_equals_the_hub_read(parquet_file: Path, monkeypatch) -> None:
    for options in (
        {"id_column": "key"},
        {"id_column": "key", "dedupe": False},
        {"id_column": None},
        {"id_column": "label"},  # integer ids, as strings
    ):

        def make(options: dict = options) -> HubImageDataset:
            return HubImageDataset(
                "mine", path=str(parquet_file), image_column="picture", **options
            )

        _, ids, _, sources = both_paths(monkeypatch, make)
        assert len(ids) == (4 if options == {"id_column": "key"} else 5)
        assert sources[-1]["bytes"] == jpeg_bytes(synthetic_image(4, (24, 24)))
    assert ids == ["0", "1", "2", "3", "4"]


def test_direct_binary_and_string_image_columns_become_bytes_and_paths(
    tmp_path: Path, monkeypatch
) -> None:
    table = pa.table(
        {
            "raw": pa.array([tiny_jpeg(n) for n in range(7)], pa.binary()),
            "where": pa.array([f"/images/{n}.jpg" for n in range(7)], pa.large_string()),
            "key": pa.array([f"k{n % 5}" for n in range(7)], pa.string()),
        }
    )
    file = tmp_path / "plain.parquet"
    pq.write_table(table, file, row_group_size=3)

    def raw() -> HubImageDataset:
        return HubImageDataset("mine", path=str(file), image_column="raw", id_column="key")

    _, ids, _, sources = both_paths(monkeypatch, raw)
    assert ids == ["k0", "k1", "k2", "k3", "k4"]
    assert sources == [{"bytes": tiny_jpeg(n), "path": None} for n in range(5)]

    def where() -> HubImageDataset:
        return HubImageDataset("mine", path=str(file), image_column="where", id_column=None)

    _, ids, _, sources = both_paths(monkeypatch, where)
    assert ids == [str(n) for n in range(7)]
    assert sources == [{"bytes": None, "path": f"/images/{n}.jpg"} for n in range(7)]


def test_big_row_groups_fall_back_to_the_hub_read_with_the_reason(
    hub_layout: Path, monkeypatch, caplog
) -> None:
    def make() -> HubImageDataset:
        return HubImageDataset("mine", path=str(hub_layout), id_column="key")

    direct = contents(build_via(make(), monkeypatch, direct=True))
    monkeypatch.setattr(parquet_rows, "MAX_ROW_GROUP_BYTES", 100)
    dataset = make()
    with caplog.at_level(logging.INFO, logger="img_search.data.hub"):
        dataset.build()
    assert dataset._parquet is None  # read through 🤗's cache
    assert dataset._table is not None
    assert [r.getMessage() for r in caplog.records if "🤗 datasets' cache" in r.getMessage()] == [
        "dataset mine: read through 🤗 datasets' cache: row group 0 of "
        f"{hub_layout / 'data' / 'train-00000-of-00002.parquet'} holds 0 MiB of 'image' "
        "(more than 0 MiB a read)"
    ]
    assert contents(dataset) == direct


def test_direct_dataset_pickles_without_open_files(hub_layout: Path) -> None:
    dataset = HubImageDataset("mine", path=str(hub_layout), id_column="key", dedupe=False)
    dataset.build()
    assert dataset.get(5).source == struct_source(5)  # a file open, a row group cached
    assert dataset._parquet._open is not None and dataset._parquet._cached is not None
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy._parquet._open is None and copy._parquet._cached is None
    assert [copy.get(p).source for p in (5, 6, 0, 12, 9)] == [
        struct_source(n) for n in (5, 6, 0, 12, 9)
    ]
    assert copy.listing() == dataset.listing()
    assert copy.item_ids() == dataset.item_ids()
    assert copy.describe() == dataset.describe()
