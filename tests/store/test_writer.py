"""Writing embedding tables: part files (invisible until closed), one-file tables assembled from
parts, the errors table, and vectors as Arrow (folder tables: ``test_publish_folder.py``).

Real Parquet files under ``tmp_path``, read back and compared value for value.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from table_fixtures import (
    Group,
    _no_fault_injection,
    ids_for,
    listing,
    make_file,
    mixed_dims,
    two_groups,
    unit_rows,
    write_part,
)

from img_search.atomic import is_temporary, temporary_name
from img_search.host import HOST
from img_search.store import (
    PartWriter,
    TableLayout,
    is_table,
    read_embeddings,
    read_metadata,
    vectors_to_arrow,
)
from img_search.store import schema as S
from img_search.store import writer as W
from img_search.store.writer import (
    assemble_file,
    read_errors,
    table_schema,
    with_metadata,
    write_errors,
)

__all__ = ["_no_fault_injection", "mixed_dims", "two_groups"]  # fixtures of table_fixtures


# -- one-file tables -------------------------------------------------------------------


def test_parts_of_one_dimension_assemble_into_one_fixed_size_file(
    tmp_path: Path, two_groups: list[Group]
) -> None:
    path = tmp_path / "emb.parquet"
    assert make_file(path, two_groups) == 15
    assert path.is_file()

    schema = pq.read_schema(path)
    assert schema.names == ["id", "model_name", "dataset_name", "embedding"]
    assert schema.field("embedding").type == pa.list_(pa.float32(), 8)

    table = pq.read_table(path)
    assert table.num_rows == 15
    assert table.column("id").to_pylist() == two_groups[0][2] + two_groups[1][2]
    assert table.column("model_name").to_pylist() == ["clip"] * 15
    assert table.column("dataset_name").to_pylist() == ["inquire"] * 9 + ["flickr30k"] * 6

    everything = read_embeddings(path)
    assert len(everything) == 15
    assert everything.vectors.dtype == np.float32
    assert everything.vectors.shape == (15, 8)
    assert list(everything.ids) == two_groups[0][2] + two_groups[1][2]
    np.testing.assert_array_equal(
        everything.vectors, np.concatenate([two_groups[0][3], two_groups[1][3]])
    )
    assert is_table(path)


def test_extra_fields_sit_after_the_id_with_their_types_and_values(tmp_path: Path) -> None:
    path = tmp_path / "extra.parquet"
    extra = [pa.field("width", pa.int32())]
    layout = TableLayout.of(path)
    layout.parts_dir.mkdir(parents=True)
    part = write_part(
        layout.parts_dir / "part-00000.parquet",
        ("clip", "photos", ["a", "b", "c"], unit_rows(3, 4, 0)),
        batch=2,
        extra={"width": [640, 480, 320]},
        extra_fields=extra,
    )
    assemble_file(path, with_metadata(table_schema(4, "float32", extra), {}), [part])
    table = pq.read_table(path)
    assert table.schema.names == ["id", "width", "model_name", "dataset_name", "embedding"]
    assert table.column("width").type == pa.int32()
    assert table.column("width").to_pylist() == [640, 480, 320]
    assert read_embeddings(path).ids.tolist() == ["a", "b", "c"]


# -- PartWriter ------------------------------------------------------------------------


def test_part_is_invisible_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "part-00000.parquet"
    ids, vectors = ids_for("x", 10), unit_rows(10, 6, 0)
    part = PartWriter(path, "clip", "photos")
    assert listing(tmp_path) == []
    part.write(ids[:5], vectors[:5])
    part.write(ids[5:], vectors[5:])
    assert listing(tmp_path) == [temporary_name(path).name]
    assert temporary_name(path).name.startswith(f".part-00000.parquet.tmp-{HOST}-{os.getpid()}-")
    assert not path.exists()

    assert part.close() == 10
    assert listing(tmp_path) == ["part-00000.parquet"]
    table = pq.read_table(path)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 6)
    assert table.column("id").to_pylist() == ids
    assert set(table.column("model_name").to_pylist()) == {"clip"}
    assert set(table.column("dataset_name").to_pylist()) == {"photos"}
    np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist()), vectors)


def test_part_row_groups_keep_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part larger than one row group, assembled: rows keep the order they were written in."""
    monkeypatch.setattr(W, "ROW_GROUP_BYTES", 1)  # every write is its own row group
    path = tmp_path / "emb.parquet"
    ids, vectors = ids_for("x", 11), unit_rows(11, 3, 1)
    make_file(path, [("clip", "photos", ids, vectors)])
    assert pq.ParquetFile(TableLayout.of(path).parts_dir / "part-00000.parquet").num_row_groups == 3
    matrix = read_embeddings(path)
    assert matrix.ids.tolist() == ids
    np.testing.assert_array_equal(matrix.vectors, vectors)


def test_part_close_without_rows_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "part-00000.parquet"
    part = PartWriter(path, "clip", "photos")
    part.write([], np.zeros((0, 4), np.float32))  # nothing to write is fine
    assert part.close() == 0
    assert listing(tmp_path) == []


def test_part_abort_removes_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "part-00000.parquet"
    part = PartWriter(path, "clip", "photos")
    part.write(["a", "b"], unit_rows(2, 4, 0))
    assert len(listing(tmp_path)) == 1
    part.abort()
    assert listing(tmp_path) == []
    part.abort()  # twice is harmless
    assert part.close() == 0
    assert listing(tmp_path) == []


def test_part_plain_list_holds_the_vectors_as_written(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    vectors = unit_rows(5, 4, 2)
    write_part(path, ("clip", "photos", ids_for("x", 5), vectors), fixed_size=False)
    table = pq.read_table(path)
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist()), vectors)


def test_part_plain_list_float16_holds_the_float16_values(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    vectors = unit_rows(5, 4, 2)
    write_part(
        path, ("clip", "photos", ids_for("x", 5), vectors), fixed_size=False, output_dtype="float16"
    )
    table = pq.read_table(path)
    assert table.schema.field("embedding").type == pa.list_(pa.float16())
    values = table.column("embedding").combine_chunks().flatten().to_numpy()
    np.testing.assert_array_equal(values.reshape(5, 4), vectors.astype(np.float16))


def test_part_refuses_an_unknown_dtype_unequal_lengths_and_a_new_dimension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="output_dtype"):
        PartWriter(tmp_path / "x.parquet", "clip", "photos", output_dtype="bfloat16")
    part = PartWriter(tmp_path / "x.parquet", "clip", "photos")
    with pytest.raises(ValueError, match="2 ids but 1 vectors"):
        part.write(["a", "b"], unit_rows(1, 4, 0))
    part.write(["a"], unit_rows(1, 4, 0))
    with pytest.raises(ValueError, match="changed dimension from 4 to 5"):
        part.write(["b"], unit_rows(1, 5, 0))
    assert part.close() == 1
    assert pq.read_table(tmp_path / "x.parquet").column("id").to_pylist() == ["a"]


@pytest.mark.parametrize("fixed_size", [True, False])
def test_part_dimension_change_after_a_row_group_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixed_size: bool
) -> None:
    monkeypatch.setattr(W, "ROW_GROUP_BYTES", 1)  # the first write is flushed already
    part = PartWriter(tmp_path / "x.parquet", "clip", "photos", fixed_size=fixed_size)
    part.write(["a", "b"], unit_rows(2, 4, 0))
    with pytest.raises(ValueError, match="dimension"):
        part.write(["c", "d"], unit_rows(2, 5, 1))
    part.abort()
    assert listing(tmp_path) == []


# -- assemble_file ---------------------------------------------------------------------


def test_assemble_file_appends_after_earlier(tmp_path: Path, two_groups: list[Group]) -> None:
    """Appending: the earlier table's rows, then each part in order, under the same name."""
    path = tmp_path / "emb.parquet"
    make_file(path, [two_groups[0]], metadata={"run": 1})
    third = ("clip", "coco", ids_for("coco", 3), unit_rows(3, 8, 7))
    rows = make_file(path, [two_groups[1], third], metadata={"run": 2}, earlier=path, first_part=1)
    assert rows == 9 + 6 + 3

    assert pq.read_schema(path).field("embedding").type == pa.list_(pa.float32(), 8)
    assert read_metadata(path) == {"run": 2}
    matrix = read_embeddings(path)
    assert matrix.ids.tolist() == two_groups[0][2] + two_groups[1][2] + third[2]
    np.testing.assert_array_equal(
        matrix.vectors, np.concatenate([two_groups[0][3], two_groups[1][3], third[3]])
    )
    datasets = pq.read_table(path, columns=["dataset_name"]).column(0).to_pylist()
    assert datasets == ["inquire"] * 9 + ["flickr30k"] * 6 + ["coco"] * 3
    # Only the table and the job state (removed by the pipeline, not by assemble_file).
    assert listing(tmp_path) == ["emb.parquet", "emb.parquet.partial"]
    assert not any(is_temporary(p.name) for p in tmp_path.rglob("*"))


def test_assemble_file_new_dimension_becomes_plain_list(
    tmp_path: Path, mixed_dims: list[Group]
) -> None:
    path = tmp_path / "emb.parquet"
    make_file(path, [mixed_dims[0]])
    assert pq.read_schema(path).field("embedding").type == pa.list_(pa.float32(), 8)
    make_file(path, [mixed_dims[1]], earlier=path, first_part=1)
    assert pq.read_schema(path).field("embedding").type == pa.list_(pa.float32())
    for model, _, ids, vectors in mixed_dims:
        matrix = read_embeddings(path, model_name=model)
        assert matrix.ids.tolist() == ids
        np.testing.assert_array_equal(matrix.vectors, vectors)


def test_assemble_file_without_parts_writes_an_empty_table(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    schema = with_metadata(table_schema(4, "float32"), {"rows": 0})
    assert assemble_file(path, schema, []) == 0
    assert pq.read_table(path).num_rows == 0
    assert read_metadata(path) == {"rows": 0}
    assert read_embeddings(path).vectors.shape == (0, 4)


# -- errors table ----------------------------------------------------------------------


def test_errors_table_round_trips_its_rows(tmp_path: Path) -> None:
    path = TableLayout.of(tmp_path / "emb.parquet").errors_path
    assert path == tmp_path / "emb.errors.parquet"
    assert read_errors(path) == []
    rows = [
        ("bad/1.jpg", "inquire", "clip", "cannot decode image: truncated"),
        ("x.png", "photos", "siglip", "empty file (0 bytes): x.png"),
    ]
    write_errors(path, rows)
    assert read_errors(path) == rows
    errors = pq.read_table(path)
    assert errors.schema == S.ERRORS_SCHEMA
    assert errors.to_pylist()[0] == {
        "id": "bad/1.jpg",
        "dataset_name": "inquire",
        "model_name": "clip",
        "reason": "cannot decode image: truncated",
    }
    assert listing(tmp_path) == ["emb.errors.parquet"]


def test_no_errors_no_errors_table_and_stale_one_removed(tmp_path: Path) -> None:
    path = tmp_path / "emb.errors.parquet"
    write_errors(path, [])
    assert not path.exists()
    write_errors(path, [("a", "photos", "clip", "bad")])
    assert path.exists()
    write_errors(path, [])  # a rerun without errors: the old table must go
    assert not path.exists()
    assert read_errors(path) == []


# -- vectors_to_arrow ------------------------------------------------------------------


def test_vectors_to_arrow_gives_fixed_size_lists_of_the_output_dtype() -> None:
    matrix = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    array = vectors_to_arrow(matrix)
    assert isinstance(array, pa.FixedSizeListArray)
    assert array.type == pa.list_(pa.float32(), 4)
    assert len(array) == 3
    np.testing.assert_array_equal(
        array.flatten().to_numpy().reshape(3, 4), matrix.astype(np.float32)
    )
    assert array[1].as_py() == pytest.approx(matrix[1].tolist())

    half = vectors_to_arrow(matrix, "float16")
    assert half.type == pa.list_(pa.float16(), 4)
    np.testing.assert_array_equal(half.flatten().to_numpy(), matrix.astype(np.float16).ravel())

    # A non-contiguous view is handled.
    np.testing.assert_array_equal(
        vectors_to_arrow(matrix.T).flatten().to_numpy().reshape(4, 3), matrix.T.astype(np.float32)
    )
    with pytest.raises(ValueError, match="2-d"):
        vectors_to_arrow(np.zeros(4))
