"""Side files (errors, saved indexes, the Milvus Lite database): two outputs never share one.

The file table ``out/photos.parquet`` and the folder table ``out/photos``
used to share ``out/photos.errors.parquet``, the index folders and
``out/photos.milvus.db``: the second job deleted the first one's error rows.
Here both are embedded side by side, from two folders with a different
number of unreadable images, then indexed (flat and Milvus Lite).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from img_search.store import TableLayout, read_embeddings, read_metadata
from img_search.store.writer import write_errors
from img_search.testing.fixtures import jpeg_bytes, synthetic_image

MODEL = ["models=simulated", "models.simulated.batch_seconds=0"]


def photo_folder(folder: Path, prefix: str, good: int, broken: int) -> list[str]:
    """``good`` decodable photos and ``broken`` files that are not images; the ids of the good ones."""
    folder.mkdir(parents=True)
    for i in range(good):
        (folder / f"{prefix}{i}.jpg").write_bytes(jpeg_bytes(synthetic_image(i)))
    for i in range(broken):
        (folder / f"{prefix}broken{i}.jpg").write_bytes(b"not a jpeg")
    return sorted(f"{prefix}{i}.jpg" for i in range(good))


def embed(run_embed, photos: Path, out: Path) -> None:
    run_embed(
        *MODEL,
        "datasets=image_folder",
        f"datasets.image_folder.path={photos}",
        f"output_path={out}",
        "tasks.shard_size=3",
    )


def test_file_and_folder_tables_of_one_name_keep_their_own_side_files(tmp_path, run_embed):
    out = tmp_path / "out"
    file_table, folder_table = out / "photos.parquet", out / "photos"
    expected = {
        file_table: (photo_folder(tmp_path / "a", "a", good=5, broken=1), 1),
        folder_table: (photo_folder(tmp_path / "b", "b", good=7, broken=2), 2),
    }
    embed(run_embed, tmp_path / "a", file_table)
    file_errors = TableLayout.of(file_table).errors_path
    before = file_errors.read_bytes()
    embed(run_embed, tmp_path / "b", folder_table)

    assert file_errors == out / "photos.errors.parquet"
    assert file_errors.read_bytes() == before  # the folder table's job left it alone
    assert TableLayout.of(folder_table).errors_path == out / "photos.side" / "errors.parquet"
    for table, (ids, errors) in expected.items():
        metadata = read_metadata(table)
        error_rows = pq.read_table(TableLayout.of(table).errors_path).to_pylist()
        assert metadata["errors"] == len(error_rows) == errors
        assert all(row["id"].startswith(ids[0][0] + "broken") for row in error_rows)
        assert sorted(read_embeddings(table).ids) == ids

    pytest.importorskip("pymilvus", reason="img_search[milvus] is not installed")
    from img_search.search.indexes import build_all, index_dir, load_index

    for table in expected:
        for saved in build_all(
            str(table), {"flat": {"kind": "flat"}, "milvus": {"kind": "milvus"}}
        ):
            saved.close()
    assert sorted(p.name for p in out.iterdir()) == [
        "photos",
        "photos.errors.parquet",
        "photos.milvus.db",
        "photos.parquet",
        "photos.side",
        "photos.simulated.image_folder.flat.index",
        "photos.simulated.image_folder.milvus.index",
    ]
    assert sorted(p.name for p in (out / "photos.side").iterdir()) == [
        "errors.parquet",
        "milvus.db",
        "simulated.image_folder.flat.index",
        "simulated.image_folder.milvus.index",
    ]
    for table, (ids, _) in expected.items():
        for name in ("flat", "milvus"):
            saved = load_index(index_dir(table, "simulated", "image_folder", name))
            try:
                assert saved.table == table.resolve() and sorted(saved.ids) == ids
                query = saved.vector(0)
                hits = saved.top_k(query, k=len(ids))
                assert sorted(item for _, item, _ in hits) == ids  # this table's rows, all of them
            finally:
                saved.close()


def test_a_folder_tables_earlier_errors_beside_it_are_still_its_own(tmp_path):
    """A folder table written before side folders keeps its errors at ``<folder>.errors.parquet``,
    as long as no file table of that name exists and the file counts what its metadata says."""
    from img_search.testing.tables import write_embedding_table

    folder = tmp_path / "photos"
    rows = [("a.jpg", "image_folder", "simulated", "cannot decode image")]
    write_embedding_table(folder, [], metadata={"errors": 1})
    earlier = tmp_path / "photos.errors.parquet"
    write_errors(earlier, rows)
    assert TableLayout.of(folder).errors_path == earlier

    write_errors(earlier, rows * 2)  # counts another number of errors: not this table's
    assert TableLayout.of(folder).errors_path == tmp_path / "photos.side" / "errors.parquet"
    write_errors(earlier, rows)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "photos.parquet")  # its twin owns the name
    assert TableLayout.of(folder).errors_path == tmp_path / "photos.side" / "errors.parquet"


def test_a_folder_tables_earlier_index_beside_it_is_still_used(tmp_path):
    """An index an earlier img_search saved beside a folder table (``<folder>.<model>.<dataset>.flat.index``)
    is opened as it is, not rebuilt; the file table of the same name never takes it for its own."""
    import numpy as np

    from img_search.search.indexes import index_dir, open_index
    from img_search.testing.tables import write_embedding_table

    vectors = np.eye(4, dtype=np.float32)
    chunks = [(["a", "b", "c", "d"], vectors)]
    folder = tmp_path / "photos"
    write_embedding_table(folder, [("m", "d", chunks)])
    built = open_index(folder)
    assert (
        built.path == index_dir(folder, "m", "d", "flat") == tmp_path / "photos.side/m.d.flat.index"
    )
    earlier = tmp_path / "photos.m.d.flat.index"
    built.path.rename(earlier)  # where an earlier img_search saved it

    reopened = open_index(folder)
    assert reopened.path == earlier and reopened.meta == built.meta  # not rebuilt
    assert [item for _, item, _ in reopened.top_k(vectors[2], 1)] == ["c"]

    write_embedding_table(tmp_path / "photos.parquet", [("m", "d", [(["x", "y"], vectors[:2])])])
    twin = open_index(tmp_path / "photos.parquet")  # the same place: built again for itself
    assert twin.path == earlier and list(twin.ids) == ["x", "y"]
    assert open_index(folder).path == tmp_path / "photos.side/m.d.flat.index"
