"""hub_files: which files a 🤗 dataset is, and whether they can be read directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_fixtures import keep_datasets_cache_in, write_hub_layout

from img_search.data import hub_files


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    keep_datasets_cache_in(tmp_path_factory.getbasetemp(), monkeypatch)


@pytest.fixture
def hub_layout(tmp_path: Path) -> Path:
    return write_hub_layout(tmp_path)


def test_local_parquet_files_in_hub_order(hub_layout: Path) -> None:
    files, declared = hub_files.local_parquet_files(str(hub_layout), ["test", "train"])
    assert [Path(f).name for f in files] == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert declared is None
    single = hub_layout / "data" / "test-00000-of-00001.parquet"
    assert hub_files.local_parquet_files(str(single), ["whatever"]) == ([str(single)], None)
    assert hub_files.local_parquet_files("owner/name", ["train"]) is None  # a Hub id
    assert hub_files.local_parquet_files(str(hub_layout / "absent"), ["train"]) is None
    assert hub_files.local_parquet_files(str(hub_layout), ["train[:3]"]) is None  # 🤗 slices it


def test_a_hub_id_is_owner_slash_name_and_anything_else_a_path(tmp_path: Path) -> None:
    assert not hub_files.looks_like_local_path("lmms-lab/flickr30k")
    for path in ("./photos", "../photos", "/data/x", "~/x", "a/b/c", "images.parquet"):
        assert hub_files.looks_like_local_path(path), path
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert hub_files.looks_like_local_path(str(tmp_path / "owner" / "name"))
