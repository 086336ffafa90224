"""id_filters: ids as strings, the first row of each id, a wanted subset, an id list file."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pyarrow as pa
import pytest

from img_search.data.id_filters import read_id_list, rows_to_keep, transform_ids


def test_stem_ids_drop_the_folders_and_the_last_suffix() -> None:
    paths = ["train/1000092795.jpg", "a/b.c.png", "noext", ".hidden"]
    stems = transform_ids(pa.array(paths), "stem").to_pylist()
    assert (
        stems == ["1000092795", "b.c", "noext", ".hidden"] == [PurePosixPath(p).stem for p in paths]
    )
    assert transform_ids(pa.array([7, 42]), "none").to_pylist() == ["7", "42"]


def test_rows_to_keep_first_of_each_id_and_only_wanted_ones() -> None:
    ids = pa.chunked_array([["a", "b"], ["a", "c", "b"]])
    assert rows_to_keep(ids, dedupe=True, wanted=None).tolist() == [1, 1, 0, 1, 0]
    assert rows_to_keep(ids, dedupe=False, wanted={"b", "c", "zz"}).tolist() == [0, 1, 0, 1, 1]
    assert rows_to_keep(ids, dedupe=True, wanted={"b", "c"}).tolist() == [0, 1, 0, 1, 0]
    assert rows_to_keep(pa.chunked_array([], pa.string()), True, None).tolist() == []


def test_id_list_joins_inline_ids_and_the_file_lines(tmp_path: Path) -> None:
    assert read_id_list(None, None) is None
    listed = tmp_path / "ids.txt"
    listed.write_text(" y \n\nz\n")
    assert read_id_list(["x", 3], str(listed)) == {"x", "3", "y", "z"}
    assert read_id_list([], None) == set()
    with pytest.raises(FileNotFoundError, match=r"id list file not found: .*nope\.txt"):
        read_id_list(None, str(tmp_path / "nope.txt"))
