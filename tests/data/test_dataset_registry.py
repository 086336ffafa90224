"""The dataset registry: names to classes, and a spec's mistakes named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from img_search.data import (
    DATASETS,
    Flickr30kDataset,
    ImageFolderDataset,
    InquireDataset,
    get_dataset,
)
from img_search.registry import UnknownNameError


def test_registry_unknown_dataset_lists_the_registered_names() -> None:
    assert set(DATASETS) == {"inquire", "flickr30k", "image_folder", "hf_images", "webdataset"}
    with pytest.raises(UnknownNameError) as info:
        get_dataset({"dataset": "nope"}, name="x")
    message = str(info.value)
    assert "'nope'" in message
    assert "datasets.x" in message
    for name in DATASETS:
        assert name in message
    assert isinstance(info.value, KeyError)


def test_registry_unknown_option_is_named_with_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        get_dataset({"dataset": "image_folder", "path": str(tmp_path), "colour": "red"}, name="x")
    message = str(info.value)
    assert "colour" in message
    assert "path" in message  # what it accepts instead


def test_registry_spec_without_a_dataset_key_is_refused() -> None:
    with pytest.raises(ValueError, match="dataset:"):
        get_dataset({"path": "somewhere"}, name="x")


def test_registry_builds_each_kind_with_its_name_and_options(tmp_path: Path) -> None:
    root = tmp_path / "inquire"  # nothing is read before build()
    dataset = get_dataset({"dataset": "inquire", "path": str(root), "kwargs": {"splits": ["test"]}})
    assert isinstance(dataset, InquireDataset)
    assert dataset.name == "inquire"
    assert dataset.splits == ["test"] and dataset.path == str(root)
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
