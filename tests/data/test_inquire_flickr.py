"""INQUIRE and Flickr30k on local Hub-layout copies: ids, splits, id subsets, streaming, the direct read."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_fixtures import all_ids, both_paths, keep_datasets_cache_in
from PIL import Image

from img_search.data import Flickr30kDataset, InquireDataset
from img_search.images import open_image
from img_search.testing.fixtures import (
    inquire_file_name,
    jpeg_bytes,
    synthetic_image,
    write_flickr30k_like,
    write_inquire_like,
)


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    keep_datasets_cache_in(tmp_path_factory.getbasetemp(), monkeypatch)


@pytest.fixture(scope="module")
def inquire(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("inquire_like")
    return root, write_inquire_like(root, n_images=41)


@pytest.fixture(scope="module")
def flickr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("flickr_like")
    return root, write_flickr30k_like(root, n_images=12)


# -- INQUIRE ---------------------------------------------------------------------


def test_inquire_gets_each_image_once_by_position_in_data_order(
    inquire: tuple[Path, list[str]],
) -> None:
    root, expected = inquire
    assert len(expected) == 41
    dataset = InquireDataset("inquire", path=str(root))
    dataset.build()
    assert dataset.random_access
    assert dataset.length() == 41
    ids = [dataset.get(i).id for i in range(dataset.length())]
    assert ids == expected
    assert len(set(ids)) == 41
    assert all_ids(dataset) == expected


def test_inquire_rows_repeat_but_ids_are_unique(inquire: tuple[Path, list[str]]) -> None:
    import pyarrow.parquet as pq

    root, expected = inquire
    names = []
    for split in ("validation", "test"):
        table = pq.read_table(root / "data" / f"{split}-00000-of-00001.parquet")
        names += table.column("inat24_file_name").to_pylist()
    assert len(names) > len(set(names))  # the fixture really has repeated rows
    assert set(names) == set(expected)
    # First occurrence order is the dataset order.
    assert list(dict.fromkeys(names)) == expected


def test_inquire_item_source_is_the_fixture_s_jpeg_bytes(inquire: tuple[Path, list[str]]) -> None:
    root, expected = inquire
    dataset = InquireDataset("inquire", path=str(root))
    dataset.build()
    for position in (0, 17, 40):
        item = dataset.get(position)
        assert item.id == expected[position]
        assert isinstance(item.source, dict)
        assert isinstance(item.source["bytes"], bytes)
        image = open_image(item.source)
        assert isinstance(image, Image.Image)
        assert image.mode == "RGB"
        assert min(image.size) >= 48
    # The bytes are those the fixture wrote for that image index.
    first_index = int(expected[0].rsplit("/", 1)[1].split("-")[0], 16)
    assert expected[0] == inquire_file_name(first_index)
    assert dataset.get(0).source["bytes"] == jpeg_bytes(synthetic_image(first_index))


def test_inquire_test_split_holds_its_images_in_data_order(inquire: tuple[Path, list[str]]) -> None:
    root, expected = inquire
    dataset = InquireDataset("inquire", path=str(root), splits=["test"])
    dataset.build()
    # np.array_split(41, 2) puts images 21..40 in the test split.
    test_ids = [inquire_file_name(i) for i in range(21, 41)]
    ids = all_ids(dataset)
    assert dataset.length() == 20
    assert sorted(ids) == sorted(test_ids)
    assert ids == [i for i in expected if i in set(test_ids)]
    # The same with the split as a plain string.
    single = InquireDataset("inquire", path=str(root), splits="test")
    single.build()
    assert all_ids(single) == ids


def test_inquire_streaming_matches_random_access(inquire: tuple[Path, list[str]]) -> None:
    root, expected = inquire
    streamed = InquireDataset("inquire", path=str(root), streaming=True)
    streamed.build()
    assert not streamed.random_access
    assert streamed.length() is None
    items = list(streamed)
    assert [item.id for item in items] == expected
    assert open_image(items[3].source).mode == "RGB"


# -- Flickr30k -------------------------------------------------------------------


def test_flickr_ids_are_stems(flickr: tuple[Path, list[str]]) -> None:
    root, stems = flickr
    dataset = Flickr30kDataset("flickr30k", path=str(root))
    dataset.build()
    assert dataset.length() == 12
    assert all_ids(dataset) == stems
    assert stems[0] == "1000092795"
    assert all("." not in i for i in stems)
    assert open_image(dataset.get(5).source).mode == "RGB"


def test_flickr_id_subset_keeps_data_order(flickr: tuple[Path, list[str]]) -> None:
    root, stems = flickr
    wanted = [stems[9], stems[2], stems[4]]  # deliberately not in data order
    dataset = Flickr30kDataset("flickr30k", path=str(root), ids=wanted)
    dataset.build()
    assert dataset.length() == 3
    assert all_ids(dataset) == [stems[2], stems[4], stems[9]]


def test_flickr_ids_file_keeps_listed_ids_in_data_order_and_adds_inline_ones(
    flickr: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, stems = flickr
    id_file = tmp_path / "karpathy_test.txt"
    id_file.write_text(f"{stems[7]}\n\n  {stems[0]}  \n{stems[11]}\nnot-in-data\n")
    dataset = Flickr30kDataset("flickr30k", path=str(root), ids_file=str(id_file))
    dataset.build()
    assert all_ids(dataset) == [stems[0], stems[7], stems[11]]
    # Inline ids and a file are combined.
    both = Flickr30kDataset("flickr30k", path=str(root), ids=[stems[3]], ids_file=str(id_file))
    both.build()
    assert all_ids(both) == [stems[0], stems[3], stems[7], stems[11]]


def test_flickr_id_subset_streamed_gives_the_same_ids(flickr: tuple[Path, list[str]]) -> None:
    root, stems = flickr
    wanted = [stems[1], stems[6]]
    dataset = Flickr30kDataset("flickr30k", path=str(root), ids=wanted, streaming=True)
    dataset.build()
    assert all_ids(dataset) == wanted


def test_flickr_missing_ids_file_names_the_file(
    flickr: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, _ = flickr
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        Flickr30kDataset("flickr30k", path=str(root), ids_file=str(missing))


# -- read directly, the same as through 🤗's cache ------------------------------------


@pytest.mark.parametrize("case", ["inquire", "inquire_test", "flickr", "flickr_ids"])
def test_direct_read_equals_the_hub_read_on_inquire_and_flickr(
    case: str, inquire: tuple[Path, list[str]], flickr: tuple[Path, list[str]], monkeypatch
) -> None:
    inquire_root, inquire_ids = inquire
    flickr_root, stems = flickr
    make, expected = {
        "inquire": (lambda: InquireDataset("inquire", path=str(inquire_root)), inquire_ids),
        "inquire_test": (
            lambda: InquireDataset("inquire", path=str(inquire_root), splits=["test"]),
            [i for i in inquire_ids if i in {inquire_file_name(n) for n in range(21, 41)}],
        ),
        "flickr": (lambda: Flickr30kDataset("flickr30k", path=str(flickr_root)), stems),
        "flickr_ids": (
            lambda: Flickr30kDataset("flickr30k", path=str(flickr_root), ids=stems[7:2:-2]),
            stems[3:8:2],
        ),
    }[case]
    _, ids, item_ids, sources = both_paths(monkeypatch, make)
    assert ids == item_ids == expected
    assert all(isinstance(s["bytes"], bytes) and s["path"] is None for s in sources)
    assert open_image(sources[-1]).mode == "RGB"
