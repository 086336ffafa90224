"""Atomic files: temporary names that name their writer, exclusive creation, and a file or folder
replaced whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from img_search.atomic import (
    atomic_write,
    atomic_write_text,
    create_exclusive,
    is_temporary,
    temporary_name,
)
from img_search.host import HOST


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_temporary_name_names_its_writer(tmp_path: Path) -> None:
    tmp = temporary_name(tmp_path / "emb.parquet")
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(f".emb.parquet.tmp-{HOST}-{os.getpid()}-")
    assert temporary_name(tmp_path / "emb.parquet") == tmp  # one name per writer and file
    assert is_temporary(tmp.name)
    assert not is_temporary("emb.parquet")
    assert not is_temporary(".hidden")


def test_create_exclusive_keeps_the_first_writers_text(tmp_path: Path) -> None:
    path = tmp_path / "claim"
    assert create_exclusive(path, "first")
    assert not create_exclusive(path, "second")
    assert path.read_text() == "first"
    assert listing(tmp_path) == ["claim"]


def test_atomic_write_replaces_a_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert listing(tmp_path) == ["state.json"]


def test_atomic_write_replaces_a_folder(tmp_path: Path) -> None:
    path = tmp_path / "table"

    def fill(names: list[str]):
        def write(tmp: Path) -> None:
            tmp.mkdir()
            for name in names:
                (tmp / name).write_text(name)

        return write

    atomic_write(path, fill(["a", "b"]))
    atomic_write(path, fill(["c"]))
    assert listing(path) == ["c"]
    assert (path / "c").read_text() == "c"
    assert listing(tmp_path) == ["table"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert listing(tmp_path) == ["state.json"]
