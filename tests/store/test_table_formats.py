"""How tables store their vectors, and the tools that open them: plain vector columns, folder parts of
one dimension each, tables written before, and pandas, pyarrow, polars, DuckDB and 🤗 datasets on
both forms. Real Parquet files under ``tmp_path``, read back and compared value for value.
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
    assert_same_rows,
    by_key,
    folder_schema,
    ids_for,
    listing,
    make_file,
    make_folder,
    mixed_dims,
    stage_parts,
    two_groups,
    unit_rows,
)

from img_search.store import read_embeddings, read_metadata
from img_search.store import schema as S
from img_search.store.writer import publish_folder, write_errors

__all__ = ["_no_fault_injection", "mixed_dims", "two_groups"]  # fixtures of table_fixtures


def read_with_other_tools(path: Path, tmp_path: Path) -> dict[str, dict]:
    """(model, id) → vector as pyarrow, pandas, polars, DuckDB and 🤗 datasets read the folder as
    it is (its parts hold plain lists, whatever each model's dimension)."""
    import datasets
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet")
    frame = pl.scan_parquet(f"{path}/*.parquet").collect()
    pandas = pd.read_parquet(path)
    table = dataset.to_table()
    rows = duckdb.sql(
        f"SELECT model_name, id, embedding FROM read_parquet('{path}/*.parquet')"
    ).fetchall()
    hf = datasets.load_dataset(
        "parquet", data_dir=str(path), split="train", cache_dir=str(tmp_path / "hf_cache")
    )
    columns = ("model_name", "id", "embedding")
    return {
        "pyarrow": by_key(*(table.column(c).to_pylist() for c in columns)),
        "pandas": by_key(*(pandas[c].tolist() for c in columns)),
        "polars": by_key(*(frame[c].to_list() for c in columns)),
        "duckdb": by_key(*map(list, zip(*rows, strict=True))),
        "datasets": by_key(*(hf[c] for c in columns)),
    }


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_folder_of_one_dimension_opens_with_other_tools(
    tmp_path: Path, two_groups: list[Group], dtype: str
) -> None:
    """Plain-list parts: each tool reads the folder as it is, errors table in ``emb.side/`` beside it."""
    path = tmp_path / "emb"
    layout = make_folder(path, two_groups, output_dtype=dtype)
    for part in read_metadata(path)["parts"]:
        assert pq.read_schema(path / part).field("embedding").type == pa.list_(
            S.OUTPUT_DTYPES[dtype]
        )
    write_errors(layout.errors_path, [("bad.jpg", "inquire", "clip", "cannot decode image")])
    assert layout.errors_path == tmp_path / "emb.side" / "errors.parquet"
    assert "emb.side" in listing(tmp_path) and "errors.parquet" not in listing(path)
    expected = [(m, d, i, v.astype(dtype).astype(np.float32)) for m, d, i, v in two_groups]
    for tool, rows in read_with_other_tools(path, tmp_path).items():
        assert len(rows) == 15, tool
        assert_same_rows(rows, expected)


def test_folder_of_two_dimensions_opens_with_other_tools(
    tmp_path: Path, two_groups: list[Group], mixed_dims: list[Group]
) -> None:
    """Parts of 8 and 4 dimensions: every tool opens the folder as it is."""
    path = tmp_path / "emb"
    groups = [two_groups[1], *mixed_dims]  # (model, id) names one row
    make_folder(path, groups)
    types = [pq.read_schema(path / p).field("embedding").type for p in read_metadata(path)["parts"]]
    assert types == [pa.list_(pa.float32())] * 3
    for tool, rows in read_with_other_tools(path, tmp_path).items():
        assert len(rows) == sum(len(g[2]) for g in groups), tool
        assert_same_rows(rows, groups)


def column_storage(file: Path) -> dict[str, tuple[set[str], set[str], bool]]:
    """Per column (by its top name): compressions, encodings, and whether any row group has statistics."""
    metadata = pq.read_metadata(file)
    found: dict[str, tuple[set[str], set[str], bool]] = {}
    for group in range(metadata.num_row_groups):
        for number in range(metadata.num_columns):
            column = metadata.row_group(group).column(number)
            name = column.path_in_schema.split(".")[0]
            codecs, encodings, stats = found.get(name, (set(), set(), False))
            codecs.add(column.compression)
            encodings.update(column.encodings)
            found[name] = (codecs, encodings, stats or column.is_stats_set)
    return found


@pytest.mark.parametrize("form", ["emb.parquet", "emb"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_vectors_are_stored_plain(
    tmp_path: Path, two_groups: list[Group], form: str, dtype: str
) -> None:
    """The vectors (fixed-size in a file, plain lists in a folder's parts): no dictionary, no
    compression, no statistics (they decode at memory speed); the other columns keep Snappy,
    their dictionary and the statistics the readers skip by."""
    path = tmp_path / form
    if form.endswith(".parquet"):
        make_file(path, two_groups, output_dtype=dtype)
    else:
        make_folder(path, two_groups, output_dtype=dtype)
    files = (
        [path] if form.endswith(".parquet") else [path / p for p in read_metadata(path)["parts"]]
    )
    for file in files:
        size = 8 if form.endswith(".parquet") else -1
        assert pq.read_schema(file).field("embedding").type == pa.list_(
            S.OUTPUT_DTYPES[dtype], size
        )
        storage = column_storage(file)
        assert storage["embedding"] == ({"UNCOMPRESSED"}, {"PLAIN", "RLE"}, False)
        for name in ("id", "model_name", "dataset_name"):
            codecs, encodings, stats = storage[name]
            assert codecs == {"SNAPPY"} and "RLE_DICTIONARY" in encodings and stats, name


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_tables_written_before_still_read(
    tmp_path: Path, two_groups: list[Group], mixed_dims: list[Group], dtype: str
) -> None:
    """Tables in the earlier format (dictionary + Snappy vectors; ``list<half>`` folder parts) read
    as before, and a folder of such parts with plain parts appended reads as one selection."""
    from img_search.store.blocks import vector_blocks
    from img_search.store.reader import selection_batches
    from img_search.store.selection import load_selection
    from img_search.testing.tables import rewrite_as_before

    file, folder = tmp_path / "emb.parquet", tmp_path / "emb"
    make_file(file, two_groups, output_dtype=dtype)
    layout = make_folder(folder, two_groups, output_dtype=dtype)
    rewrite_as_before(file)
    rewrite_as_before(folder)
    value = S.OUTPUT_DTYPES[dtype]
    assert pq.read_schema(file).field("embedding").type == pa.list_(value, 8)
    assert column_storage(file)["embedding"][:2] == ({"SNAPPY"}, {"PLAIN", "RLE", "RLE_DICTIONARY"})
    for part in read_metadata(folder)["parts"]:
        assert pq.read_schema(folder / part).field("embedding").type == pa.list_(value)
        assert column_storage(folder / part)["embedding"][0] == {"SNAPPY"}

    appended = ("clip", "inquire", ids_for("new", 5), unit_rows(5, 8, 9))
    new = stage_parts(layout, [appended, mixed_dims[1]], first_part=2, output_dtype=dtype)
    names = [*read_metadata(folder)["parts"], *(p.name for p in new)]
    publish_folder(layout, folder_schema(names, output_dtype=dtype), new)

    stored = [v.astype(dtype).astype(np.float32) for v in (two_groups[0][3], appended[3])]
    for path, extra in ((file, []), (folder, [appended])):
        ids = two_groups[0][2] + [i for g in extra for i in g[2]]
        expected = np.concatenate(stored[: 1 + len(extra)])
        matrix = read_embeddings(path, model_name="clip", dataset_name="inquire")
        assert matrix.ids.tolist() == ids
        np.testing.assert_array_equal(matrix.vectors, expected)
        selection = load_selection(path, "clip", "inquire")
        assert selection.ids.tolist() == ids
        np.testing.assert_array_equal(selection.vectors, expected)
        batches = selection_batches(path, "clip", "inquire", batch_rows=4)
        fixed = {pa.types.is_fixed_size_list(b.schema.field("embedding").type) for b in batches}
        assert fixed == ({True} if path == file else {False})  # folder parts: plain lists
        blocks = list(vector_blocks(path, "clip", "inquire", block_rows=4, threads=2))
        assert [i for b in blocks for i in b.ids.to_pylist()] == ids
        np.testing.assert_array_equal(np.concatenate([b.vectors for b in blocks]), expected)
    tiny = read_embeddings(folder, model_name="tiny")
    np.testing.assert_array_equal(tiny.vectors, mixed_dims[1][3].astype(dtype).astype(np.float32))


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
