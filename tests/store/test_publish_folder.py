"""Folder tables published from staged parts: the parts moved in and listed, parts added to a
finished folder, an empty one, and the same publish redone after a crash in the middle.

Real Parquet files under ``tmp_path``, read back and compared value for value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from table_fixtures import (
    Group,
    _no_fault_injection,
    folder_schema,
    listing,
    make_folder,
    mixed_dims,
    stage_parts,
    two_groups,
)

from img_search.atomic import is_temporary
from img_search.store import TableLayout, is_table, read_embeddings, read_metadata
from img_search.store import writer as W
from img_search.store.layout import COMMON_METADATA
from img_search.store.writer import publish_folder

__all__ = ["_no_fault_injection", "mixed_dims", "two_groups"]  # fixtures of table_fixtures


# -- folder tables ---------------------------------------------------------------------


def test_publish_new_folder_moves_the_parts_in_and_lists_them(
    tmp_path: Path, two_groups: list[Group]
) -> None:
    path = tmp_path / "emb"
    layout = TableLayout.of(path)
    assert layout.is_folder
    assert layout.parts_dir == tmp_path / "emb.partial" / "parts"
    parts = stage_parts(layout, two_groups)
    assert not path.exists()
    assert not is_table(path)

    metadata = {"job": {"name": "nightly"}, "rows": 15}
    publish_folder(layout, folder_schema([p.name for p in parts], metadata), parts)

    assert listing(path) == [COMMON_METADATA, "part-00000.parquet", "part-00001.parquet"]
    assert listing(layout.parts_dir) == []  # the parts were moved, not copied
    assert not any(is_temporary(p.name) for p in tmp_path.rglob("*"))
    assert layout.finished()
    assert is_table(path)
    assert read_metadata(path) == {
        **metadata,
        "parts": ["part-00000.parquet", "part-00001.parquet"],
    }
    assert pq.read_schema(path / COMMON_METADATA).field("embedding").type == pa.list_(pa.float32())

    matrix = read_embeddings(path, model_name="clip")
    assert matrix.ids.tolist() == two_groups[0][2] + two_groups[1][2]
    np.testing.assert_array_equal(
        matrix.vectors, np.concatenate([two_groups[0][3], two_groups[1][3]])
    )
    flickr = read_embeddings(path, dataset_name="flickr30k")
    np.testing.assert_array_equal(flickr.vectors, two_groups[1][3])


def test_publish_into_an_empty_folder(tmp_path: Path, two_groups: list[Group]) -> None:
    """An empty folder at the output path (made by hand, say) is taken over."""
    path = tmp_path / "emb"
    path.mkdir()
    make_folder(path, two_groups)
    assert listing(path) == [COMMON_METADATA, "part-00000.parquet", "part-00001.parquet"]
    assert len(read_embeddings(path)) == 15


def test_publish_adds_parts_to_a_finished_folder(
    tmp_path: Path, two_groups: list[Group], mixed_dims: list[Group]
) -> None:
    path = tmp_path / "emb"
    layout = make_folder(path, two_groups, metadata={"run": 1})
    before = (path / "part-00000.parquet").stat().st_ino

    tiny = mixed_dims[1]
    new = stage_parts(layout, [tiny], first_part=2)
    names = [*read_metadata(path)["parts"], *(p.name for p in new)]
    publish_folder(layout, folder_schema(names, {"run": 2}), new)

    assert listing(path) == [
        COMMON_METADATA,
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert (path / "part-00000.parquet").stat().st_ino == before  # earlier parts untouched
    assert not any(is_temporary(p.name) for p in tmp_path.rglob("*"))
    assert read_metadata(path) == {"run": 2, "parts": names}

    clip = read_embeddings(path, model_name="clip")
    assert clip.ids.tolist() == two_groups[0][2] + two_groups[1][2]
    np.testing.assert_array_equal(
        clip.vectors, np.concatenate([two_groups[0][3], two_groups[1][3]])
    )
    small = read_embeddings(path, model_name="tiny")
    assert small.ids.tolist() == tiny[2]
    np.testing.assert_array_equal(small.vectors, tiny[3])


def test_publish_folder_without_parts_is_an_empty_table(tmp_path: Path) -> None:
    """A job whose every row failed still leaves a finished, empty folder table."""
    path = tmp_path / "emb"
    publish_folder(TableLayout.of(path), folder_schema([]), [])
    assert listing(path) == [COMMON_METADATA]
    assert is_table(path)
    assert len(read_embeddings(path)) == 0


# -- a crash in the middle of publishing -----------------------------------------------


class Crash(Exception):
    """Stands in for the SIGKILL that ``fail_point`` sends."""


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_publish_folder_redone_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_groups: list[Group], existing: bool
) -> None:
    """finalize promises that a rerun redoes its steps; so the same publish_folder call must finish."""
    path = tmp_path / "emb"
    layout = TableLayout.of(path)
    first_part = 0
    names: list[str] = []
    if existing:
        make_folder(path, [two_groups[0]])
        first_part, names = 1, read_metadata(path)["parts"]
    parts = stage_parts(layout, [two_groups[1]], first_part=first_part)
    schema = folder_schema([*names, *(p.name for p in parts)])

    def crash(point: str) -> None:
        if point == "finalize":
            raise Crash(point)

    with monkeypatch.context() as patch:
        patch.setattr(W, "fail_point", crash)
        with pytest.raises(Crash):
            publish_folder(layout, schema, parts)

    publish_folder(layout, schema, parts)  # the rerun
    assert read_embeddings(path).ids.tolist() == [
        *(two_groups[0][2] if existing else []),
        *two_groups[1][2],
    ]
