"""Embedding tables: EmbeddingTableWriter (parts → one file) and the readers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from img_search.store import (
    EmbeddingTableWriter,
    read_embeddings,
    read_metadata,
    vectors_to_arrow,
)
from img_search.store import schema as S
from img_search.store.writer import ResumeMismatch


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ids_for(prefix: str, n: int) -> list[str]:
    return [f"{prefix}/{i:04d}.jpg" for i in range(n)]


def write_groups(
    path: Path,
    groups: list[tuple[str, str, list[str], np.ndarray]],
    *,
    batch: int = 4,
    metadata: dict | None = None,
    **options,
) -> EmbeddingTableWriter:
    writer = EmbeddingTableWriter(path, **options)
    writer.start()
    for model, dataset, ids, vectors in groups:
        writer.begin_group(model, dataset)
        for start in range(0, len(ids), batch):
            writer.write(ids[start : start + batch], vectors[start : start + batch])
    writer.finalize(metadata or {"job": "test"})
    return writer


@pytest.fixture
def two_groups() -> list[tuple[str, str, list[str], np.ndarray]]:
    return [
        ("clip", "inquire", ids_for("inq", 9), unit_rows(9, 8, 0)),
        ("clip", "flickr30k", ids_for("f30k", 6), unit_rows(6, 8, 1)),
    ]


# -- round trip ------------------------------------------------------------------


def test_same_dim_groups_one_fixed_size_file(tmp_path: Path, two_groups) -> None:
    path = tmp_path / "emb.parquet"
    write_groups(path, two_groups)
    assert path.is_file()

    schema = pq.read_schema(path)
    assert schema.names == ["id", "model_name", "dataset_name", "embedding"]
    assert schema.field("embedding").type == pa.list_(pa.float32(), 8)
    assert pa.types.is_fixed_size_list(schema.field("embedding").type)

    table = pq.read_table(path)
    assert table.num_rows == 15
    assert table.column("id").to_pylist() == two_groups[0][2] + two_groups[1][2]
    assert table.column("model_name").to_pylist() == ["clip"] * 15
    assert table.column("dataset_name").to_pylist() == ["inquire"] * 9 + ["flickr30k"] * 6

    everything = read_embeddings(path)
    assert everything.vectors.dtype == np.float32
    assert everything.vectors.shape == (15, 8)
    assert list(everything.ids) == two_groups[0][2] + two_groups[1][2]
    np.testing.assert_array_equal(
        everything.vectors, np.concatenate([two_groups[0][3], two_groups[1][3]])
    )
    assert len(everything) == 15


def test_read_embeddings_filters(tmp_path: Path, two_groups) -> None:
    path = tmp_path / "emb.parquet"
    groups = [*two_groups, ("siglip", "inquire", ids_for("inq", 5), unit_rows(5, 8, 2))]
    write_groups(path, groups)

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

    nothing = read_embeddings(path, model_name="absent")
    assert len(nothing) == 0
    assert nothing.vectors.shape[0] == 0


def test_float16_output(tmp_path: Path, two_groups) -> None:
    path = tmp_path / "emb16.parquet"
    write_groups(path, two_groups, output_dtype="float16")
    assert pq.read_schema(path).field("embedding").type == pa.list_(pa.float16(), 8)
    matrix = read_embeddings(path, dataset_name="inquire")
    assert matrix.vectors.dtype == np.float32
    np.testing.assert_allclose(matrix.vectors, two_groups[0][3], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(matrix.vectors, two_groups[0][3].astype(np.float16))
    assert read_metadata(path)["output_dtype"] == "float16"


def test_models_of_different_dims_in_one_file(tmp_path: Path) -> None:
    path = tmp_path / "mixed.parquet"
    ids = ids_for("inq", 7)
    small, large = unit_rows(7, 4, 3), unit_rows(7, 12, 4)
    write_groups(path, [("tiny", "inquire", ids, small), ("big", "inquire", ids, large)], batch=3)
    assert pa.types.is_list(pq.read_schema(path).field("embedding").type)

    tiny = read_embeddings(path, model_name="tiny")
    assert tiny.vectors.shape == (7, 4)
    assert list(tiny.ids) == ids
    np.testing.assert_array_equal(tiny.vectors, small)

    big = read_embeddings(path, model_name="big", dataset_name="inquire")
    assert big.vectors.shape == (7, 12)
    assert list(big.ids) == ids
    np.testing.assert_array_equal(big.vectors, large)


def test_extra_fields_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "extra.parquet"
    writer = EmbeddingTableWriter(path, extra_fields=[pa.field("width", pa.int32())])
    writer.start()
    writer.begin_group("clip", "photos")
    writer.write(["a", "b"], unit_rows(2, 4, 0), {"width": pa.array([640, 480])})
    writer.finalize({})
    table = pq.read_table(path)
    assert table.schema.names == ["id", "width", "model_name", "dataset_name", "embedding"]
    assert table.column("width").type == pa.int32()
    assert table.column("width").to_pylist() == [640, 480]


# -- partial state and atomic finish ---------------------------------------------


def test_partial_folder_and_manifest_before_finalize(tmp_path: Path, two_groups) -> None:
    path = tmp_path / "emb.parquet"
    partial = tmp_path / "emb.parquet.partial"
    writer = EmbeddingTableWriter(path)
    writer.start()
    assert json.loads((partial / "manifest.json").read_text())["parts"] == []

    (model, dataset, ids, vectors), second = two_groups
    writer.begin_group(model, dataset)
    writer.write(ids, vectors)
    # The part being written is not listed yet, and nothing is at the output path.
    assert json.loads((partial / "manifest.json").read_text())["parts"] == []
    assert not path.exists()

    writer.begin_group(second[0], second[1])  # closes the first part
    writer.write(second[2], second[3])
    manifest = json.loads((partial / "manifest.json").read_text())
    assert manifest["parts"] == [
        {
            "file": "part-00000.parquet",
            "model_name": "clip",
            "dataset_name": "inquire",
            "rows": 9,
            "dim": 8,
        }
    ]
    closed = pq.read_table(partial / "part-00000.parquet")
    assert closed.column("id").to_pylist() == ids
    assert not path.exists()
    assert not writer.errors_path.exists()

    writer.finalize({"job": "t"})
    assert path.is_file()
    assert not partial.exists()
    assert pq.read_table(path).num_rows == 15
    # No stray temporary files next to the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.parquet"]


def test_part_rows_splits_parts(tmp_path: Path) -> None:
    path = tmp_path / "emb.parquet"
    ids = ids_for("x", 35)
    vectors = unit_rows(35, 6, 5)
    writer = EmbeddingTableWriter(path, part_rows=10)
    writer.start()
    writer.begin_group("clip", "photos")
    for start in range(0, 35, 5):
        writer.write(ids[start : start + 5], vectors[start : start + 5])
    manifest = json.loads((writer.partial_dir / "manifest.json").read_text())
    assert [part["rows"] for part in manifest["parts"]] == [10, 10, 10]
    writer.finalize({})
    assert [part.rows for part in writer.parts] == [10, 10, 10, 5]
    assert [part.file for part in writer.parts] == [f"part-{i:05d}.parquet" for i in range(4)]
    matrix = read_embeddings(path)
    assert list(matrix.ids) == ids
    np.testing.assert_array_equal(matrix.vectors, vectors)
    assert read_metadata(path)["rows"] == 35


def test_start_discards_earlier_partial_state(tmp_path: Path) -> None:
    path = tmp_path / "emb.parquet"
    first = EmbeddingTableWriter(path)
    first.start()
    first.begin_group("clip", "photos")
    first.write(["stale"], unit_rows(1, 4, 0))
    first.begin_group("clip", "other")  # closes a part
    assert (first.partial_dir / "part-00000.parquet").exists()

    second = EmbeddingTableWriter(path)
    second.start()
    assert list(second.partial_dir.iterdir()) == [second.partial_dir / "manifest.json"]
    second.begin_group("clip", "photos")
    second.write(["fresh"], unit_rows(1, 4, 1))
    second.finalize({})
    assert list(read_embeddings(path).ids) == ["fresh"]


# -- errors table ------------------------------------------------------------------


def test_errors_table(tmp_path: Path, two_groups) -> None:
    path = tmp_path / "emb.parquet"
    writer = EmbeddingTableWriter(path)
    writer.start()
    model, dataset, ids, vectors = two_groups[0]
    writer.begin_group(model, dataset)
    writer.write(ids, vectors)
    writer.add_errors("clip", "inquire", [("bad/1.jpg", "cannot decode image: truncated")])
    writer.add_errors("clip", "inquire", [])
    writer.add_errors("siglip", "photos", [("x.png", "empty file (0 bytes): x.png")])
    writer.finalize({})

    assert writer.errors_path == tmp_path / "emb.errors.parquet"
    errors = pq.read_table(writer.errors_path)
    assert errors.schema.names == ["id", "dataset_name", "model_name", "reason"]
    assert errors.schema == S.ERRORS_SCHEMA
    assert errors.to_pylist() == [
        {
            "id": "bad/1.jpg",
            "dataset_name": "inquire",
            "model_name": "clip",
            "reason": "cannot decode image: truncated",
        },
        {
            "id": "x.png",
            "dataset_name": "photos",
            "model_name": "siglip",
            "reason": "empty file (0 bytes): x.png",
        },
    ]


def test_no_errors_no_errors_table_and_stale_one_removed(tmp_path: Path, two_groups) -> None:
    path = tmp_path / "emb.parquet"
    errors_path = tmp_path / "emb.errors.parquet"
    write_groups(path, two_groups)
    assert not errors_path.exists()

    # A run with errors, then a rerun without: the old errors table must go.
    writer = EmbeddingTableWriter(path)
    writer.start()
    writer.add_errors("clip", "inquire", [("a", "bad")])
    writer.finalize({})
    assert errors_path.exists()
    write_groups(path, two_groups)
    assert not errors_path.exists()


# -- compatibility and metadata ----------------------------------------------------


def test_file_opens_with_pandas_pyarrow_and_datasets(tmp_path: Path, two_groups) -> None:
    import datasets
    import pandas as pd

    path = tmp_path / "emb.parquet"
    write_groups(path, two_groups)
    expected_ids = two_groups[0][2] + two_groups[1][2]
    expected = np.concatenate([two_groups[0][3], two_groups[1][3]])

    frame = pd.read_parquet(path)
    assert len(frame) == 15
    assert frame["id"].tolist() == expected_ids
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_numpy()), expected)

    table = pq.ParquetFile(path).read()
    assert table.num_rows == 15
    assert table.column("id").to_pylist() == expected_ids

    hf = datasets.load_dataset(
        "parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf_cache")
    )
    assert hf.num_rows == 15
    assert hf["id"] == expected_ids
    np.testing.assert_allclose(np.array(hf[0]["embedding"], dtype=np.float32), expected[0])


def test_float16_file_opens_with_pandas_and_datasets(tmp_path: Path, two_groups) -> None:
    import datasets
    import pandas as pd

    path = tmp_path / "emb16.parquet"
    write_groups(path, two_groups, output_dtype="float16")
    assert len(pd.read_parquet(path)) == 15
    hf = datasets.load_dataset(
        "parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf_cache")
    )
    assert hf.num_rows == 15
    assert hf["id"] == two_groups[0][2] + two_groups[1][2]


def test_metadata(tmp_path: Path, two_groups) -> None:
    path = tmp_path / "emb.parquet"
    passed = {"job": "nightly", "models": {"clip": {"dim": 8}}, "seed": 3, "when": Path("/x")}
    write_groups(path, two_groups, metadata=passed)
    metadata = read_metadata(path)
    assert set(metadata) == {"job", "models", "seed", "when", "format", "output_dtype", "rows"}
    assert metadata["job"] == "nightly"
    assert metadata["models"] == {"clip": {"dim": 8}}
    assert metadata["seed"] == 3
    assert metadata["when"] == "/x"  # non-JSON values are stored as strings
    assert metadata["format"] == S.FORMAT
    assert metadata["output_dtype"] == "float32"
    assert metadata["rows"] == 15


def test_read_metadata_rejects_foreign_parquet(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    with pytest.raises(ValueError, match="not an img_search embedding table"):
        read_metadata(path)


# -- writer argument checks --------------------------------------------------------


def test_writer_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="output_dtype"):
        EmbeddingTableWriter(tmp_path / "x.parquet", output_dtype="bfloat16")
    writer = EmbeddingTableWriter(tmp_path / "x.parquet")
    writer.start()
    with pytest.raises(RuntimeError, match="begin_group"):
        writer.write(["a"], unit_rows(1, 4, 0))
    writer.begin_group("clip", "photos")
    with pytest.raises(ValueError, match="2 ids but 1 vectors"):
        writer.write(["a", "b"], unit_rows(1, 4, 0))
    writer.write([], np.zeros((0, 4), np.float32))  # nothing to write is fine
    writer.write(["a"], unit_rows(1, 4, 0))
    with pytest.raises(ValueError, match="changed dimension from 4 to 5"):
        writer.write(["b"], unit_rows(1, 5, 0))


def test_dimension_change_after_part_boundary_is_refused(tmp_path: Path) -> None:
    writer = EmbeddingTableWriter(tmp_path / "x.parquet", part_rows=2)
    writer.start()
    writer.begin_group("clip", "photos")
    writer.write(["a", "b"], unit_rows(2, 4, 0))  # closes part 0
    with pytest.raises(ValueError, match="dimension"):
        writer.write(["c", "d"], unit_rows(2, 5, 1))


# -- vectors_to_arrow ---------------------------------------------------------------


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


def test_empty_selection_keeps_the_dimension(tmp_path: Path, two_groups) -> None:
    path = tmp_path / "emb.parquet"
    write_groups(path, two_groups)
    nothing = read_embeddings(path, model_name="absent")
    assert nothing.vectors.shape == (0, 8)
    assert nothing.vectors.dtype == np.float32


# -- resume ---------------------------------------------------------------------


JOB = {"kind": "image", "output_dtype": "float32", "models": {"clip": {"checkpoint": "a"}}}


def test_resume_keeps_listed_parts_and_drops_orphans(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    first = EmbeddingTableWriter(out, part_rows=4)
    first.start(JOB)
    first.record_identity("clip", {"fingerprint": "f1", "checkpoint": "a"})
    first.begin_group("clip", "photos")
    first.write(
        [f"i{k}" for k in range(6)], unit_rows(6, 3, 0)
    )  # one closed part of 6, nothing open
    first.write(
        ["i6", "i7"], unit_rows(2, 3, 1)
    )  # still in an open (temporary) part: lost on a crash
    (out.parent / f".{out.name}.tmp-999").write_bytes(b"half a final file")

    second = EmbeddingTableWriter(out, part_rows=4)
    assert second.has_partial()
    assert second.resume(JOB) == 6
    assert second.done_ids("clip", "photos") == {f"i{k}" for k in range(6)}
    assert second.done_ids("clip", "other") == set()
    assert sorted(p.name for p in second.partial_dir.iterdir()) == [
        "manifest.json",
        "part-00000.parquet",
    ]
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))
    second.record_identity("clip", {"fingerprint": "f1", "checkpoint": "a"})
    second.begin_group("clip", "photos")
    second.write(["i6", "i7"], unit_rows(2, 3, 1))
    second.finalize({})
    assert pq.read_table(out).column("id").to_pylist() == [f"i{k}" for k in range(8)]


def test_resume_refuses_another_job_or_model(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    writer = EmbeddingTableWriter(out)
    writer.start(JOB)
    writer.record_identity("clip", {"fingerprint": "f1", "image_preprocessing": {"mean": 0.4}})
    other_job = {**JOB, "models": {"clip": {"checkpoint": "b"}}}
    with pytest.raises(
        ResumeMismatch, match=re.escape("models.clip.checkpoint: 'a' then, 'b' now")
    ):
        EmbeddingTableWriter(out).resume(other_job)
    again = EmbeddingTableWriter(out)
    again.resume(JOB)
    with pytest.raises(ResumeMismatch, match="image_preprocessing changed"):
        again.record_identity("clip", {"fingerprint": "f2", "image_preprocessing": {"mean": 0.5}})
