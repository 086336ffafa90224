"""The file level of reading a table: its metadata (both forms, foreign and unfinished files
refused), and a folder's rows as exactly the parts its metadata lists."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from table_fixtures import (
    Group,
    _no_fault_injection,
    make_file,
    make_folder,
    two_groups,
    write_part,
)

from img_search.store import is_table, open_table, read_embeddings, read_metadata
from img_search.store import schema as S
from img_search.store.layout import COMMON_METADATA

__all__ = ["_no_fault_injection", "two_groups"]  # fixtures of table_fixtures


@pytest.mark.parametrize("form", ["emb.parquet", "emb"])
def test_metadata_round_trips_in_both_forms_other_values_as_strings(
    tmp_path: Path, two_groups: list[Group], form: str
) -> None:
    path = tmp_path / form
    passed = {
        "format": S.FORMAT,
        "job": {"name": "nightly"},
        "models": {"clip": {"dim": 8}},
        "seed": 3,
        "when": Path("/x"),
    }
    if form.endswith(".parquet"):
        make_file(path, two_groups, metadata=passed)
    else:
        make_folder(path, two_groups, metadata=passed)
    metadata = read_metadata(path)
    assert metadata.pop("parts", None) == (
        None if form.endswith(".parquet") else ["part-00000.parquet", "part-00001.parquet"]
    )
    assert metadata == {
        "format": S.FORMAT,
        "job": {"name": "nightly"},
        "models": {"clip": {"dim": 8}},
        "seed": 3,
        "when": "/x",  # non-JSON values are stored as strings
    }


def test_read_metadata_rejects_foreign_parquet(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    with pytest.raises(ValueError, match="not an img_search embedding table"):
        read_metadata(path)
    assert not is_table(path)

    folder = tmp_path / "other"
    folder.mkdir()
    pq.write_metadata(pa.schema([pa.field("a", pa.int64())]), folder / COMMON_METADATA)
    with pytest.raises(ValueError, match="not an img_search embedding table"):
        read_metadata(folder)
    assert not is_table(folder)

    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet")
    assert not is_table(garbage)


def test_unfinished_folder_is_not_a_table(tmp_path: Path, two_groups: list[Group]) -> None:
    path = tmp_path / "emb"
    path.mkdir()
    write_part(path / "part-00000.parquet", two_groups[0], fixed_size=False)
    assert not is_table(path)
    with pytest.raises(ValueError, match="not a finished img_search folder table"):
        read_metadata(path)
    assert not is_table(tmp_path / "absent")
    assert not is_table(tmp_path / "absent.parquet")
    with pytest.raises(FileNotFoundError):
        read_embeddings(tmp_path / "absent")


def test_folder_reads_exactly_the_listed_parts(tmp_path: Path, two_groups: list[Group]) -> None:
    """A part file in the folder that the metadata does not list (an interrupted append) is not read."""
    path = tmp_path / "emb"
    make_folder(path, [two_groups[0]])
    write_part(path / "part-00001.parquet", two_groups[1], fixed_size=False)
    matrix = read_embeddings(path)
    assert matrix.ids.tolist() == two_groups[0][2]
    assert open_table(path).to_table().num_rows == 9
