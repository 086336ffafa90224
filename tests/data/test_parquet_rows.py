"""parquet_rows: rows of local Parquet files read by position, one row group in memory at a time."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_fixtures import image_rows, struct_source, write_groups

from img_search.data import parquet_rows
from img_search.data.parquet_rows import DirectReadDeclined, ParquetRows


def test_parquet_rows_any_row_in_any_order_across_row_groups(tmp_path: Path) -> None:
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


def test_parquet_rows_reads_a_row_group_once_while_rows_stay_in_it(
    tmp_path: Path, monkeypatch
) -> None:
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


def test_parquet_rows_declines_mixed_types_non_images_and_big_row_groups(
    tmp_path: Path, monkeypatch
) -> None:
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
