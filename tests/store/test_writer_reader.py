"""Embedding tables: part files, one-file and folder tables, the readers, and atomic file helpers.

Everything here writes real Parquet files under ``tmp_path`` and checks the values read back,
by our reader and by the tools users open the tables with (pandas, pyarrow, polars, DuckDB,
🤗 datasets).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from img_search.atomic import (
    atomic_write,
    atomic_write_text,
    create_exclusive,
    is_temporary,
    temporary_name,
)
from img_search.host import HOST
from img_search.store import (
    PartWriter,
    TableLayout,
    is_table,
    open_table,
    read_embeddings,
    read_metadata,
    vectors_to_arrow,
)
from img_search.store import schema as S
from img_search.store import writer as W
from img_search.store.layout import COMMON_METADATA
from img_search.store.writer import (
    assemble_file,
    publish_folder,
    read_errors,
    table_schema,
    with_metadata,
    write_errors,
)

Group = tuple[str, str, list[str], np.ndarray]  # model, dataset, ids, vectors


@pytest.fixture(autouse=True)
def _no_fault_injection(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fail_point`` kills the process when IMG_SEARCH_FAULT names it; never here."""
    monkeypatch.delenv("IMG_SEARCH_FAULT", raising=False)


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ids_for(prefix: str, n: int) -> list[str]:
    return [f"{prefix}/{i:04d}.jpg" for i in range(n)]


def write_part(
    path: Path,
    group: Group,
    *,
    batch: int = 4,
    extra: dict[str, list[Any]] | None = None,
    **options: Any,
) -> Path:
    """One part file, written in small batches like the pipeline does."""
    model, dataset, ids, vectors = group
    part = PartWriter(path, model, dataset, **options)
    for start in range(0, len(ids), batch):
        columns = {k: v[start : start + batch] for k, v in (extra or {}).items()}
        part.write(ids[start : start + batch], vectors[start : start + batch], columns or None)
    assert part.close() == len(ids)
    return path


def make_file(
    path: Path,
    groups: list[Group],
    *,
    metadata: dict[str, Any] | None = None,
    output_dtype: str = "float32",
    earlier: Path | None = None,
    first_part: int = 0,
) -> int:
    """A one-file table from parts staged where the pipeline stages them."""
    layout = TableLayout.of(path)
    layout.parts_dir.mkdir(parents=True, exist_ok=True)
    parts = [
        write_part(layout.parts_dir / f"part-{i:05d}.parquet", g, output_dtype=output_dtype)
        for i, g in enumerate(groups, first_part)
    ]
    dims = {int(g[3].shape[1]) for g in groups}
    if earlier is not None:
        earlier_type = pq.read_schema(earlier).field(S.EMBEDDING).type
        dims.add(earlier_type.list_size if pa.types.is_fixed_size_list(earlier_type) else -1)
    dim = dims.pop() if len(dims) == 1 else None
    schema = with_metadata(table_schema(dim, output_dtype), metadata or {"job": {"name": "test"}})
    return assemble_file(path, schema, parts, earlier=earlier)


def stage_parts(
    layout: TableLayout, groups: list[Group], *, first_part: int = 0, **options: Any
) -> list[Path]:
    """Plain-list parts under ``<out>.partial/parts/``, as a folder table's parts must be."""
    layout.parts_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_part(layout.parts_dir / f"part-{i:05d}.parquet", g, fixed_size=False, **options)
        for i, g in enumerate(groups, first_part)
    ]


def folder_schema(
    parts: list[str], metadata: dict[str, Any] | None = None, output_dtype: str = "float32"
) -> pa.Schema:
    return with_metadata(table_schema(None, output_dtype), {**(metadata or {}), "parts": parts})


def make_folder(
    path: Path, groups: list[Group], *, metadata: dict[str, Any] | None = None, **options: Any
) -> TableLayout:
    layout = TableLayout.of(path)
    parts = stage_parts(layout, groups, **options)
    dtype = options.get("output_dtype", "float32")
    publish_folder(layout, folder_schema([p.name for p in parts], metadata, dtype), parts)
    return layout


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def by_key(models: list[Any], ids: list[Any], vectors: list[Any]) -> dict[tuple[str, str], Any]:
    """(model, id) → vector, for tools that do not promise an order across files."""
    return {
        (m, i): np.asarray(v, dtype=np.float32)
        for m, i, v in zip(models, ids, vectors, strict=True)
    }


@pytest.fixture
def two_groups() -> list[Group]:
    return [
        ("clip", "inquire", ids_for("inq", 9), unit_rows(9, 8, 0)),
        ("clip", "flickr30k", ids_for("f30k", 6), unit_rows(6, 8, 1)),
    ]


@pytest.fixture
def mixed_dims() -> list[Group]:
    """Two models of different dimensions over the same images."""
    ids = ids_for("inq", 7)
    return [
        ("clip", "inquire", ids, unit_rows(7, 8, 3)),
        ("tiny", "inquire", ids, unit_rows(7, 4, 4)),
    ]


def expected_rows(groups: list[Group]) -> dict[tuple[str, str], np.ndarray]:
    return {(g[0], i): v for g in groups for i, v in zip(g[2], g[3], strict=True)}


def assert_same_rows(actual: dict[tuple[str, str], np.ndarray], groups: list[Group]) -> None:
    expected = expected_rows(groups)
    assert set(actual) == set(expected)
    for key, vector in expected.items():
        np.testing.assert_array_equal(actual[key], vector)


# -- one-file tables: round trip -------------------------------------------------------


def test_same_dim_parts_one_fixed_size_file(tmp_path: Path, two_groups: list[Group]) -> None:
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


def test_read_embeddings_filters(tmp_path: Path, two_groups: list[Group]) -> None:
    path = tmp_path / "emb.parquet"
    groups = [*two_groups, ("siglip", "inquire", ids_for("inq", 5), unit_rows(5, 8, 2))]
    make_file(path, groups)

    by_both = read_embeddings(path, model_name="clip", dataset_name="flickr30k")
    assert list(by_both.ids) == groups[1][2]
    np.testing.assert_array_equal(by_both.vectors, groups[1][3])

    by_dataset = read_embeddings(path, dataset_name="inquire")
    assert list(by_dataset.ids) == groups[0][2] + groups[2][2]
    np.testing.assert_array_equal(by_dataset.vectors, np.concatenate([groups[0][3], groups[2][3]]))

    by_model = read_embeddings(path, model_name="siglip")
    assert list(by_model.ids) == groups[2][2]
    np.testing.assert_array_equal(by_model.vectors, groups[2][3])

    clip = read_embeddings(path, model_name="clip", memory_map=False)
    assert clip.vectors.shape == (15, 8)

    assert len(read_embeddings(path, model_name="absent")) == 0


def test_float16_output(tmp_path: Path, two_groups: list[Group]) -> None:
    path = tmp_path / "emb16.parquet"
    make_file(path, two_groups, output_dtype="float16", metadata={"output_dtype": "float16"})
    assert pq.read_schema(path).field("embedding").type == pa.list_(pa.float16(), 8)
    matrix = read_embeddings(path, dataset_name="inquire")
    assert matrix.vectors.dtype == np.float32
    np.testing.assert_allclose(matrix.vectors, two_groups[0][3], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(matrix.vectors, two_groups[0][3].astype(np.float16))
    assert read_metadata(path)["output_dtype"] == "float16"


def test_models_of_different_dims_in_one_file(tmp_path: Path, mixed_dims: list[Group]) -> None:
    path = tmp_path / "mixed.parquet"
    make_file(path, mixed_dims)
    assert pq.read_schema(path).field("embedding").type == pa.list_(pa.float32())

    for model, _, ids, vectors in mixed_dims:
        matrix = read_embeddings(path, model_name=model, dataset_name="inquire")
        assert matrix.vectors.shape == vectors.shape
        assert list(matrix.ids) == ids
        np.testing.assert_array_equal(matrix.vectors, vectors)
    with pytest.raises(ValueError, match="different dimensions"):
        read_embeddings(path)


def test_extra_fields_round_trip(tmp_path: Path) -> None:
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


# -- PartWriter ----------------------------------------------------------------------------


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


def test_part_plain_list(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    vectors = unit_rows(5, 4, 2)
    write_part(path, ("clip", "photos", ids_for("x", 5), vectors), fixed_size=False)
    table = pq.read_table(path)
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist()), vectors)


def test_part_plain_list_float16(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    vectors = unit_rows(5, 4, 2)
    write_part(
        path, ("clip", "photos", ids_for("x", 5), vectors), fixed_size=False, output_dtype="float16"
    )
    table = pq.read_table(path)
    assert table.schema.field("embedding").type == pa.list_(pa.float16())
    values = table.column("embedding").combine_chunks().flatten().to_numpy()
    np.testing.assert_array_equal(values.reshape(5, 4), vectors.astype(np.float16))


def test_part_argument_checks(tmp_path: Path) -> None:
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


def test_assemble_file_no_parts(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    schema = with_metadata(table_schema(4, "float32"), {"rows": 0})
    assert assemble_file(path, schema, []) == 0
    assert pq.read_table(path).num_rows == 0
    assert read_metadata(path) == {"rows": 0}
    assert read_embeddings(path).vectors.shape == (0, 4)


# -- folder tables -------------------------------------------------------------------------


def test_publish_new_folder(tmp_path: Path, two_groups: list[Group]) -> None:
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


def test_publish_folder_without_parts(tmp_path: Path) -> None:
    """A job whose every row failed still leaves a finished, empty folder table."""
    path = tmp_path / "emb"
    publish_folder(TableLayout.of(path), folder_schema([]), [])
    assert listing(path) == [COMMON_METADATA]
    assert is_table(path)
    assert len(read_embeddings(path)) == 0


def test_folder_with_models_of_different_dims(tmp_path: Path, mixed_dims: list[Group]) -> None:
    path = tmp_path / "emb"
    make_folder(path, mixed_dims)
    for model, _, ids, vectors in mixed_dims:
        matrix = read_embeddings(path, model_name=model)
        assert matrix.vectors.dtype == np.float32
        assert matrix.ids.tolist() == ids
        np.testing.assert_array_equal(matrix.vectors, vectors)
    with pytest.raises(ValueError, match="different dimensions"):
        read_embeddings(path)
    assert len(read_embeddings(path, model_name="absent")) == 0


def test_folder_float16(tmp_path: Path, two_groups: list[Group]) -> None:
    path = tmp_path / "emb16"
    make_folder(path, two_groups, output_dtype="float16")
    assert pq.read_schema(path / COMMON_METADATA).field("embedding").type == pa.list_(pa.float16())
    matrix = read_embeddings(path, dataset_name="inquire")
    assert matrix.vectors.dtype == np.float32
    np.testing.assert_array_equal(matrix.vectors, two_groups[0][3].astype(np.float16))


def test_folder_reads_exactly_the_listed_parts(tmp_path: Path, two_groups: list[Group]) -> None:
    """A part file in the folder that the metadata does not list (an interrupted append) is not read."""
    path = tmp_path / "emb"
    make_folder(path, [two_groups[0]])
    write_part(path / "part-00001.parquet", two_groups[1], fixed_size=False)
    matrix = read_embeddings(path)
    assert matrix.ids.tolist() == two_groups[0][2]
    assert open_table(path).to_table().num_rows == 9


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


# -- errors table --------------------------------------------------------------------------


def test_errors_round_trip(tmp_path: Path) -> None:
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


# -- compatibility and metadata ------------------------------------------------------------


def test_file_opens_with_pandas_pyarrow_and_datasets(
    tmp_path: Path, two_groups: list[Group]
) -> None:
    import datasets
    import pandas as pd

    path = tmp_path / "emb.parquet"
    make_file(path, two_groups)
    expected_ids = two_groups[0][2] + two_groups[1][2]
    expected = np.concatenate([two_groups[0][3], two_groups[1][3]])

    frame = pd.read_parquet(path)
    assert frame["id"].tolist() == expected_ids
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_numpy()), expected)

    table = pq.ParquetFile(path).read()
    assert table.column("id").to_pylist() == expected_ids

    hf = datasets.load_dataset(
        "parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf_cache")
    )
    assert hf.num_rows == 15
    assert hf["id"] == expected_ids
    np.testing.assert_array_equal(np.array(hf["embedding"], dtype=np.float32), expected)


def test_float16_file_opens_with_pandas_and_datasets(
    tmp_path: Path, two_groups: list[Group]
) -> None:
    import datasets
    import pandas as pd

    path = tmp_path / "emb16.parquet"
    make_file(path, two_groups, output_dtype="float16")
    expected = np.concatenate([two_groups[0][3], two_groups[1][3]]).astype(np.float16)
    frame = pd.read_parquet(path)
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_numpy()), expected)
    hf = datasets.load_dataset(
        "parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf_cache")
    )
    assert hf.num_rows == 15
    assert hf["id"] == two_groups[0][2] + two_groups[1][2]


@pytest.mark.parametrize("form", ["emb.parquet", "emb"])
def test_metadata(tmp_path: Path, two_groups: list[Group], form: str) -> None:
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


# -- vectors_to_arrow ------------------------------------------------------------------------


def test_vectors_to_arrow() -> None:
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


def test_empty_selection_keeps_the_dimension(tmp_path: Path, two_groups: list[Group]) -> None:
    path = tmp_path / "emb.parquet"
    make_file(path, two_groups)
    nothing = read_embeddings(path, model_name="absent")
    assert nothing.vectors.shape == (0, 8)
    assert nothing.vectors.dtype == np.float32
    assert nothing.ids.tolist() == []


# -- atomic files --------------------------------------------------------------------------


def test_temporary_name_names_its_writer(tmp_path: Path) -> None:
    tmp = temporary_name(tmp_path / "emb.parquet")
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(f".emb.parquet.tmp-{HOST}-{os.getpid()}-")
    assert temporary_name(tmp_path / "emb.parquet") == tmp  # one name per writer and file
    assert is_temporary(tmp.name)
    assert not is_temporary("emb.parquet")
    assert not is_temporary(".hidden")


def test_create_exclusive(tmp_path: Path) -> None:
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


# -- a crash in the middle of publishing ---------------------------------------------------


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
