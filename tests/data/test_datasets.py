"""Image datasets on local Hub-layout copies, folders and Parquet files; the dataset registry."""

from __future__ import annotations

import functools
import logging
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from img_search.data import (
    DATASETS,
    Flickr30kDataset,
    HubImageDataset,
    ImageFolderDataset,
    InquireDataset,
    get_dataset,
    hub,
    parquet_rows,
)
from img_search.data.parquet_rows import DirectReadDeclined, ParquetRows
from img_search.images import open_image
from img_search.registry import UnknownNameError
from img_search.testing.fixtures import (
    inquire_file_name,
    jpeg_bytes,
    synthetic_image,
    write_flickr30k_like,
    write_inquire_like,
)


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Keep the Arrow cache of these small datasets out of the user's ~/.cache."""
    import datasets

    cache = tmp_path_factory.getbasetemp() / "hf_datasets_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)


@pytest.fixture(scope="module")
def inquire(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("inquire_like")
    return root, write_inquire_like(root, n_images=41)


@pytest.fixture(scope="module")
def flickr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("flickr_like")
    return root, write_flickr30k_like(root, n_images=12)


def all_ids(dataset) -> list[str]:
    return [item.id for item in dataset]


# -- INQUIRE ---------------------------------------------------------------------


def test_inquire_random_access(inquire: tuple[Path, list[str]]) -> None:
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


def test_inquire_item_source_decodes(inquire: tuple[Path, list[str]]) -> None:
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


def test_inquire_test_split_only(inquire: tuple[Path, list[str]]) -> None:
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


def test_flickr_ids_file(flickr: tuple[Path, list[str]], tmp_path: Path) -> None:
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


def test_flickr_ids_streaming_matches(flickr: tuple[Path, list[str]]) -> None:
    root, stems = flickr
    wanted = [stems[1], stems[6]]
    dataset = Flickr30kDataset("flickr30k", path=str(root), ids=wanted, streaming=True)
    dataset.build()
    assert all_ids(dataset) == wanted


def test_flickr_missing_ids_file(flickr: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, _ = flickr
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        Flickr30kDataset("flickr30k", path=str(root), ids_file=str(missing))


# -- image folder ----------------------------------------------------------------


def make_folder(root: Path) -> list[str]:
    files = {
        "b.jpg": "JPEG",
        "a/one.png": "PNG",
        "a/deeper/two.JPG": "JPEG",
        "c/three.jpeg": "JPEG",
        "c/four.Png": "PNG",
    }
    for index, (relative, fmt) in enumerate(files.items()):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        synthetic_image(index, size=(20 + index, 16)).save(path, format=fmt)
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "readme.md").write_text("# nope")
    synthetic_image(99, size=(12, 12)).save(root / ".hidden.jpg", format="JPEG")
    (root / ".thumbs").mkdir()
    synthetic_image(98, size=(12, 12)).save(root / ".thumbs" / "t.jpg", format="JPEG")
    synthetic_image(97, size=(12, 12)).save(root / "a" / ".cache.png", format="PNG")
    return sorted(files)


def test_image_folder_lists_sorted_posix_ids(tmp_path: Path) -> None:
    expected = make_folder(tmp_path)
    dataset = ImageFolderDataset("photos", path=str(tmp_path))
    dataset.build()
    ids = all_ids(dataset)
    assert ids == [
        "a/deeper/two.JPG",
        "a/one.png",
        "b.jpg",
        "c/four.Png",
        "c/three.jpeg",
    ]
    assert ids == expected
    assert dataset.length() == 5
    for position, item_id in enumerate(ids):
        item = dataset.get(position)
        assert item.id == item_id
        assert Path(item.source) == tmp_path / item_id
        assert open_image(item.source).mode == "RGB"
    assert open_image(dataset.get(0).source).size == (22, 16)  # two.JPG was image index 2


def test_image_folder_non_recursive_and_extensions(tmp_path: Path) -> None:
    make_folder(tmp_path)
    flat = ImageFolderDataset("photos", path=str(tmp_path), recursive=False)
    flat.build()
    assert all_ids(flat) == ["b.jpg"]
    pngs = ImageFolderDataset("photos", path=str(tmp_path), extensions=["png"])
    pngs.build()
    assert all_ids(pngs) == ["a/one.png", "c/four.Png"]


def test_image_folder_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    dataset = ImageFolderDataset("photos", path=str(missing))
    with pytest.raises(FileNotFoundError) as info:
        dataset.build()
    assert str(missing) in str(info.value)


def test_image_folder_empty_path() -> None:
    with pytest.raises(ValueError, match="path is empty"):
        ImageFolderDataset("photos", path="")


# -- generic Hub / Parquet -------------------------------------------------------


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


def test_hf_images_parquet_with_id_column(parquet_file: Path) -> None:
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


def test_hf_images_parquet_without_dedupe(parquet_file: Path) -> None:
    dataset = HubImageDataset(
        "mine", path=str(parquet_file), image_column="picture", id_column="key", dedupe=False
    )
    dataset.build()
    assert all_ids(dataset) == ["k-a", "k-b", "k-a", "k-c", "k-d"]


def test_hf_images_parquet_row_numbers_as_ids(parquet_file: Path) -> None:
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
def test_hf_images_wrong_column(parquet_file: Path, option: str) -> None:
    options = {"image_column": "picture", "id_column": "key", option: "nonexistent"}
    dataset = HubImageDataset("mine", path=str(parquet_file), **options)
    with pytest.raises(ValueError) as info:
        dataset.build()
    message = str(info.value)
    assert "'nonexistent'" in message
    for column in ("picture", "key", "label"):
        assert column in message


def test_hf_images_missing_parquet(tmp_path: Path) -> None:
    dataset = HubImageDataset("mine", path=str(tmp_path / "absent.parquet"))
    with pytest.raises(FileNotFoundError, match=r"absent\.parquet"):
        dataset.build()


def test_hf_images_argument_checks() -> None:
    with pytest.raises(ValueError, match="path is empty"):
        HubImageDataset("mine", path="")
    with pytest.raises(ValueError, match="id_transform"):
        HubImageDataset("mine", path="owner/name", id_transform="upper")


def test_get_before_build(parquet_file: Path) -> None:
    dataset = HubImageDataset("mine", path=str(parquet_file), image_column="picture")
    with pytest.raises(RuntimeError, match="build"):
        dataset.get(0)


# -- registry --------------------------------------------------------------------


def test_registry_unknown_dataset_lists_names() -> None:
    assert set(DATASETS) == {"inquire", "flickr30k", "image_folder", "hf_images", "webdataset"}
    with pytest.raises(UnknownNameError) as info:
        get_dataset({"dataset": "nope"}, name="x")
    message = str(info.value)
    assert "'nope'" in message
    assert "datasets.x" in message
    for name in DATASETS:
        assert name in message
    assert isinstance(info.value, KeyError)


def test_registry_unknown_option_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        get_dataset({"dataset": "image_folder", "path": str(tmp_path), "colour": "red"}, name="x")
    message = str(info.value)
    assert "colour" in message
    assert "path" in message  # what it accepts instead


def test_registry_missing_kind() -> None:
    with pytest.raises(ValueError, match="dataset:"):
        get_dataset({"path": "somewhere"}, name="x")


def test_registry_builds_each_kind(tmp_path: Path, inquire: tuple[Path, list[str]]) -> None:
    root, _ = inquire
    dataset = get_dataset({"dataset": "inquire", "path": str(root), "kwargs": {"splits": ["test"]}})
    assert isinstance(dataset, InquireDataset)
    assert dataset.name == "inquire"
    assert dataset.splits == ["test"]
    folder = get_dataset({"dataset": "image_folder", "path": str(tmp_path)}, name="photos")
    assert isinstance(folder, ImageFolderDataset)
    assert folder.name == "photos"
    assert folder.describe() == {
        "kind": "image_folder",
        "path": str(tmp_path),
        "extensions": list(folder.extensions),
        "follow_links": False,
    }
    flickr = get_dataset({"dataset": "flickr30k", "name": "f30k", "ids": ["1"]})
    assert isinstance(flickr, Flickr30kDataset)
    assert flickr.name == "f30k"
    assert flickr.path == "lmms-lab/flickr30k"


def test_image_folder_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    synthetic_image(1, size=(20, 20)).save(tmp_path / "sub" / "a.jpg")
    try:
        (tmp_path / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)
    except OSError:
        pytest.skip("cannot create symlinks here")
    dataset = ImageFolderDataset("photos", path=str(tmp_path))
    dataset.build()
    assert all_ids(dataset) == ["sub/a.jpg"]


# -- local Parquet read directly, without 🤗's Arrow cache --------------------------

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@functools.cache
def tiny_jpeg(index: int) -> bytes:
    return jpeg_bytes(synthetic_image(index, (8, 8)))


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


def build_via(dataset: HubImageDataset, monkeypatch, direct: bool) -> HubImageDataset:
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


def both_paths(monkeypatch, make) -> tuple:
    """``contents`` of ``make()`` built directly, asserted equal to the same built through 🤗."""
    direct = contents(build_via(make(), monkeypatch, direct=True))
    assert direct == contents(build_via(make(), monkeypatch, direct=False))
    return direct


@pytest.fixture
def hub_layout(tmp_path: Path) -> Path:
    """A Hub-layout folder: ``train`` in two files, ``test`` in one; row groups of 1 to 4 rows.

    Image ``n`` is row ``n``; keys repeat within and across files and splits.
    """
    data = tmp_path / "hub" / "data"
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
    return tmp_path / "hub"


def struct_source(n: int) -> dict:
    return {"bytes": tiny_jpeg(n), "path": f"pic{n}.jpg"}


def test_local_parquet_files_in_hub_order(hub_layout: Path) -> None:
    files, declared = hub.local_parquet_files(str(hub_layout), ["test", "train"])
    assert [Path(f).name for f in files] == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert declared is None
    single = hub_layout / "data" / "test-00000-of-00001.parquet"
    assert hub.local_parquet_files(str(single), ["whatever"]) == ([str(single)], None)
    assert hub.local_parquet_files("owner/name", ["train"]) is None  # a Hub id
    assert hub.local_parquet_files(str(hub_layout / "absent"), ["train"]) is None
    assert hub.local_parquet_files(str(hub_layout), ["train[:3]"]) is None  # 🤗 slices it


def test_direct_folder_two_splits_several_files(hub_layout: Path, monkeypatch) -> None:
    def make() -> HubImageDataset:
        return HubImageDataset(
            "mine", path=str(hub_layout), splits=["test", "train"], id_column="key"
        )

    _, ids, item_ids, sources = both_paths(monkeypatch, make)
    # test rows first (the order given), then train's files in order; first occurrence wins
    assert ids == item_ids == ["x", "a", "y", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    assert sources == [struct_source(n) for n in (13, 14, 15, 1, 3, 4, 6, 7, 8, 10, 11, 12)]
    assert open_image(sources[0]).size == (8, 8)


def test_direct_folder_without_dedupe_and_with_ids(hub_layout: Path, monkeypatch) -> None:
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


def test_direct_row_numbers_and_stems(hub_layout: Path, monkeypatch) -> None:
    def numbered() -> HubImageDataset:
        return HubImageDataset("mine", path=str(hub_layout), splits="train", id_column=None)

    _, ids, _, sources = both_paths(monkeypatch, numbered)
    assert ids == [str(n) for n in range(13)]
    assert sources == [struct_source(n) for n in range(13)]


def test_direct_unknown_split_is_huggingface_error(hub_layout: Path, monkeypatch) -> None:
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


@pytest.mark.parametrize("case", ["inquire", "inquire_test", "flickr", "flickr_ids"])
def test_direct_matches_hub_on_fixtures(
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


def test_direct_parquet_file_matches_hub(parquet_file: Path, monkeypatch) -> None:
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


def test_direct_binary_and_string_image_columns(tmp_path: Path, monkeypatch) -> None:
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


def test_parquet_rows_across_row_groups(tmp_path: Path) -> None:
    sizes = [[3, 1, 4], [5], [2, 2], [1]]
    files, number = [], 0
    for f, groups in enumerate(sizes):
        tables = []
        for size in groups:
            numbers = list(range(number, number + size))
            tables.append(image_rows(numbers, [f"id{n}" for n in numbers]))
            number += size
        files.append(write_groups(tmp_path / f"part{f}.parquet", tables))
    rows = ParquetRows(files, columns=["image", "key"], image_column="image")
    assert len(rows) == rows.num_rows == number == 18
    assert rows.column_names == ["image", "key"]
    assert rows.column("key").to_pylist() == [f"id{n}" for n in range(18)]
    forward = [rows.row(n, "image") for n in range(18)]
    assert forward == [struct_source(n) for n in range(18)]
    # backwards and jumping about, every row group boundary crossed both ways
    for n in [17, 0, 3, 2, 4, 8, 7, 9, 13, 12, 14, 16, 15, 11, *range(17, -1, -1)]:
        assert rows.row(n, "image") == struct_source(n)
    with pytest.raises(IndexError):
        rows.row(18, "image")
    with pytest.raises(IndexError):
        rows.row(-1, "image")


def test_parquet_rows_keeps_last_row_group(tmp_path: Path, monkeypatch) -> None:
    file = write_groups(
        tmp_path / "two.parquet",
        [image_rows([0, 1, 2], list("abc")), image_rows([3, 4], list("de"))],
    )
    rows = ParquetRows([file], image_column="image")
    reads = []
    original = pq.ParquetFile.read_row_group

    def counted(self, index, *args, **kwargs):
        reads.append(index)
        return original(self, index, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    assert [rows.row(n, "image") for n in (0, 1, 2, 3, 4, 4, 3)] == [
        struct_source(n) for n in (0, 1, 2, 3, 4, 4, 3)
    ]
    assert reads == [0, 1]


def test_parquet_rows_declines(tmp_path: Path, monkeypatch) -> None:
    first = write_groups(tmp_path / "a.parquet", [image_rows([0, 1], ["a", "b"])])
    other = tmp_path / "b.parquet"
    pq.write_table(
        pa.table({"image": image_rows([2], ["c"])["image"], "key": pa.array([7])}), other
    )
    ParquetRows([first, other], columns=["image"], image_column="image")  # key not read: fine
    with pytest.raises(DirectReadDeclined, match="'key'"):
        ParquetRows([first, other], columns=["image", "key"], image_column="image")
    with pytest.raises(DirectReadDeclined, match="'key' is int64, not image"):
        ParquetRows([other], image_column="key")
    monkeypatch.setattr(parquet_rows, "MAX_ROW_GROUP_BYTES", 100)
    with pytest.raises(DirectReadDeclined, match="row group 0"):
        ParquetRows([first], image_column="image")
    ParquetRows([first], image_column="key")  # only the image column's bytes count


def test_big_row_groups_fall_back_to_hub(hub_layout: Path, monkeypatch, caplog) -> None:
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
