"""Where the pieces of a table live, for both forms: its metadata file, the job's state and staged
parts, its side files, and where a committed part is found while a folder table is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from img_search.store import TableLayout
from img_search.store.layout import COMMON_METADATA


def test_file_and_folder_layouts_name_their_metadata_state_and_side_files(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    file, folder = TableLayout.of(tmp_path / "emb.parquet"), TableLayout.of(tmp_path / "emb")
    assert (file.is_folder, folder.is_folder) == (False, True)
    assert file.stem == folder.stem == "emb"
    assert (file.twin, folder.twin) == (folder.path, file.path)
    assert file.metadata_file == root / "emb.parquet"
    assert folder.metadata_file == root / "emb" / COMMON_METADATA
    assert file.parts_dir == root / "emb.parquet.partial" / "parts"
    assert folder.parts_dir == root / "emb.partial" / "parts"
    assert folder.staging_dir == root / "emb.partial" / "table"
    assert file.errors_path == root / "emb.errors.parquet"
    assert folder.errors_path == root / "emb.side" / "errors.parquet"
    assert file.index_dir("clip", "inat", "flat") == root / "emb.clip.inat.flat.index"
    assert folder.index_dir("clip", "inat", "flat") == root / "emb.side" / "clip.inat.flat.index"
    assert (file.milvus_lite_file, folder.milvus_lite_file) == (
        root / "emb.milvus.db",
        root / "emb.side" / "milvus.db",
    )
    assert TableLayout.owner_of(folder.errors_path, "emb") == folder.path
    assert TableLayout.owner_of(file.errors_path, "emb.parquet") == file.path


def test_a_part_is_found_staged_being_assembled_or_published(tmp_path: Path) -> None:
    layout = TableLayout.of(tmp_path / "emb")
    assert not layout.finished() and not layout.occupied()
    with pytest.raises(FileNotFoundError, match=r"part file part-00000.parquet of .* is missing"):
        layout.locate_part("part-00000.parquet")
    for folder in (layout.parts_dir, layout.staging_dir, layout.path):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-00000.parquet").write_bytes(b"rows")
        assert layout.locate_part("part-00000.parquet") == folder / "part-00000.parquet"
        if folder != layout.path:
            (folder / "part-00000.parquet").unlink()  # moved on to the next place
    assert layout.occupied() and not layout.finished()
    (layout.path / COMMON_METADATA).write_bytes(b"schema")
    assert layout.finished()
