"""A folder table (``output_path`` without ``.parquet``): no final copy, read as it is by every tool."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import run_module
from fastapi.testclient import TestClient

from img_search.store import read_embeddings, read_metadata
from img_search.testing.fixtures import jpeg_bytes, synthetic_image

#: Two models of different dimensions; the simulated model has an image and a text side.
MODELS = [
    "models=simulated",
    "models.simulated.batch_seconds=0",
    "+models.other.model=simulated",
    "+models.other.dim=32",
    "+models.other.seed=1",
    "+models.other.batch_seconds=0",
]


def job_args(root, out, *extra) -> list[str]:
    return [
        *MODELS,
        "datasets=inquire",
        f"datasets.inquire.path={root}",
        f"output_path={out}",
        "tasks.batch_size=4",
        "tasks.shard_size=8",
        *extra,
    ]


@pytest.fixture(scope="module")
def tables(inquire_dir, tmp_path_factory):
    """The same job into a folder table and into one file."""
    root, _ = inquire_dir
    work = tmp_path_factory.mktemp("folder_table")
    made = {}
    for form, out in (("folder", work / "inquire"), ("file", work / "inquire.parquet")):
        result = run_module("img_search.pipeline.embed", *job_args(root, out))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "rows: 82" in result.stdout
        made[form] = out
    return made


def test_folder_holds_parts_and_metadata_only(tables):
    folder = tables["folder"]
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "_common_metadata"
    assert all(n.startswith("part-") and n.endswith(".parquet") for n in names[1:])
    assert len(names) - 1 == 12  # 6 shards × 2 models, one part each
    metadata = read_metadata(folder)
    assert sorted(metadata["parts"]) == names[1:] and metadata["rows"] == 82
    assert not folder.with_name("inquire.partial").exists()
    assert not folder.with_name("inquire.errors.parquet").exists()


def test_folder_rows_equal_the_single_file(tables, inquire_dir):
    _, expected_ids = inquire_dir
    for model in ("simulated", "other"):
        folder = read_embeddings(tables["folder"], model_name=model)
        single = read_embeddings(tables["file"], model_name=model)
        assert list(folder.ids) == list(single.ids) == expected_ids  # dataset order, shard by shard
        np.testing.assert_array_equal(folder.vectors, single.vectors)


def test_folder_opens_in_common_readers(tables, tmp_path):
    import datasets
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds

    folder = tables["folder"]
    single = pq.read_table(tables["file"])
    # Each part holds one model's fixed-size vectors (64 and 32 dimensions): pyarrow and polars
    # take the folder's schema (plain lists) to read both at once, or read one model's parts.
    schema = pq.read_schema(folder / "_common_metadata")
    arrow = ds.dataset(folder, schema=schema).to_table()
    assert arrow.num_rows == 82
    assert sorted(arrow.column("id").to_pylist()) == sorted(single.column("id").to_pylist())
    frame = pl.scan_pyarrow_dataset(ds.dataset(folder, schema=schema)).collect()
    assert frame.shape == (82, 4)
    other = pl.scan_parquet(f"{folder}/part-other-*.parquet").collect()
    assert other.shape == (41, 4) and other.schema["embedding"] == pl.Array(pl.Float32, 32)
    counts = duckdb.sql(
        f"select model_name, count(*), min(len(embedding)), max(len(embedding)) "
        f"from read_parquet('{folder}/*.parquet') group by model_name order by model_name"
    ).fetchall()
    assert counts == [("other", 41, 32, 32), ("simulated", 41, 64, 64)]
    hf = datasets.load_dataset(
        "parquet", data_dir=str(folder), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert hf.num_rows == 82
    first = single["id"][0].as_py()
    row = hf.filter(lambda r: r["model_name"] == "simulated" and r["id"] == first)[0]
    np.testing.assert_allclose(row["embedding"], single["embedding"][0].as_py(), rtol=1e-6)


def test_search_query_build_and_evaluate_take_a_folder(tables, inquire_dir):
    _, expected_ids = inquire_dir
    folder = tables["folder"]
    result = run_module(
        "img_search.search.query",
        f"index={folder}",
        "model_name=simulated",
        f"id={expected_ids[3]}",
        "k=5",
        "json=true",
    )
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)["hits"]
    assert len(hits) == 5 and expected_ids[3] not in [h["id"] for h in hits]
    table = read_embeddings(folder, model_name="simulated")
    scores = table.vectors @ table.vectors[3]
    scores[3] = -np.inf
    assert [h["id"] for h in hits] == list(table.ids[np.argsort(-scores)[:5]])
    built = run_module(
        "img_search.search.build", f"table={folder}", "model_name=other", "indexes=[faiss_hnsw]"
    )
    assert built.returncode == 0, built.stderr
    assert (folder.with_name("inquire.side") / "other.inquire.faiss_hnsw.index").is_dir()
    evaluated = run_module(
        "img_search.search.evaluate",
        "task=inquire",
        f"images={folder}",
        "model_name=simulated",
        f"inquire.path={inquire_dir[0]}",
        "json=true",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    splits = json.loads(evaluated.stdout)["splits"]
    assert sorted(splits) == ["test", "validation"]
    assert all(s["missing_candidates"] == 0 for s in splits.values())


def test_serve_answers_from_a_folder(tables, inquire_dir):
    from img_search.serve.app import ServeSettings, create_app
    from img_search.serve.catalog import load_catalog

    _, expected_ids = inquire_dir
    catalog = load_catalog({"images": {"table": str(tables["folder"]), "model_name": "other"}})
    with TestClient(create_app(catalog, ServeSettings(default_k=4))) as client:
        tables_info = client.get("/api/tables").json()["tables"]
        assert tables_info[0]["rows"] == 41 and tables_info[0]["model_name"] == "other"
        text = client.get("/api/search/text", params={"q": "a bird", "k": 4}).json()
        assert len(text["results"]) == 4 and {h["id"] for h in text["results"]} <= set(expected_ids)
        similar = client.get("/api/similar", params={"id": expected_ids[0], "k": 3}).json()
        assert len(similar["results"]) == 3
        thumbnail = client.get(f"/api/thumbnail/images/{expected_ids[0]}")
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"


def test_folder_table_killed_while_finishing_then_rerun(tmp_path, run_embed):
    """Bad items and a crash during the last renames: the rerun finishes, the errors come with it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(9):
        (photos / f"{i}.jpg").write_bytes(jpeg_bytes(synthetic_image(i)))
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "photos_table"
    args = [
        *MODELS[:2],
        "datasets=image_folder",
        f"datasets.image_folder.path={photos}",
        f"output_path={out}",
        "tasks.shard_size=3",
    ]
    killed = run_embed(*args, expect_ok=False, env={"IMG_SEARCH_FAULT": "finalize"})
    assert killed.returncode != 0
    assert not (out / "_common_metadata").exists()  # not a finished table
    rerun = run_embed(*args)
    assert "rows: 9" in rerun.stdout and "errors: 1" in rerun.stdout
    assert sorted(read_embeddings(out).ids) == [f"{i}.jpg" for i in range(9)]
    errors = pq.read_table(tmp_path / "photos_table.side" / "errors.parquet").to_pylist()
    assert [(e["id"], e["model_name"]) for e in errors] == [("broken.jpg", "simulated")]
    assert "cannot decode" in errors[0]["reason"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "photos",
        "photos_table",
        "photos_table.side",  # the folder table's side files: its errors
    ]
