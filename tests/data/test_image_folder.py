"""image_folder: every image file under a folder, ids as sorted POSIX paths relative to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_fixtures import all_ids

from img_search.data import ImageFolderDataset
from img_search.images import open_image
from img_search.testing.fixtures import synthetic_image


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


def test_image_folder_lists_only_the_top_level_or_the_extensions_asked(tmp_path: Path) -> None:
    make_folder(tmp_path)
    flat = ImageFolderDataset("photos", path=str(tmp_path), recursive=False)
    flat.build()
    assert all_ids(flat) == ["b.jpg"]
    pngs = ImageFolderDataset("photos", path=str(tmp_path), extensions=["png"])
    pngs.build()
    assert all_ids(pngs) == ["a/one.png", "c/four.Png"]


def test_image_folder_missing_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    dataset = ImageFolderDataset("photos", path=str(missing))
    with pytest.raises(FileNotFoundError) as info:
        dataset.build()
    assert str(missing) in str(info.value)


def test_image_folder_empty_path_is_refused() -> None:
    with pytest.raises(ValueError, match="path is empty"):
        ImageFolderDataset("photos", path="")


def test_image_folder_symlink_loop_lists_each_image_once(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    synthetic_image(1, size=(20, 20)).save(tmp_path / "sub" / "a.jpg")
    try:
        (tmp_path / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)
    except OSError:
        pytest.skip("cannot create symlinks here")
    dataset = ImageFolderDataset("photos", path=str(tmp_path))
    dataset.build()
    assert all_ids(dataset) == ["sub/a.jpg"]
