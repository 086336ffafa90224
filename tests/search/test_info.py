"""``img-search info <table>`` and ``Table.info()``: models × datasets, rows, errors, indexes and
whether each is current, for a file table and a folder table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_PHOTOS, cli_runner, run_module

import img_search
from img_search.store import TableLayout, read_metadata

run_info = cli_runner("img_search.search.info")


def simulated(key: str, seed: int) -> list[str]:
    """A model key of the simulated model (no weights; its seed makes other vectors)."""
    return [f"+models.{key}.model=simulated", f"+models.{key}.seed={seed}"]


@pytest.fixture(params=["file", "folder"])
def grown(request, tmp_path, run_embed, run_build) -> Path:
    """Photos (one unreadable) embedded by one model, indexed, then a second model appended."""
    photos = tmp_path / "sample photos"
    shutil.copytree(SAMPLE_PHOTOS, photos)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    table = tmp_path / ("table.parquet" if request.param == "file" else "table")
    source = ["datasets=image_folder", f"datasets.image_folder.path={photos}"]
    first = ["models=simulated", "models.simulated.batch_seconds=0"]
    run_embed(*first, *source, f"output_path={table}")
    run_build(f"table={table}", "indexes=[flat,faiss_hnsw]")
    run_embed(
        *first,
        *simulated("other", 1),
        "+models.other.batch_seconds=0",
        *source,
        f"output_path={table}",
    )
    return table


def errors_of(table: Path, model: str) -> int:
    errors = pq.read_table(TableLayout(table).errors_path)
    return len(errors.filter(pc.field("model_name") == model))


def test_info_lists_models_rows_errors_and_marks_stale_indexes(grown):
    table = grown
    listed = json.loads(run_info(str(table), "json=true").stdout)  # img-search info <table>
    metadata = read_metadata(table)
    folder = not table.name.endswith(".parquet")
    pairs = [
        (p["model_name"], p["dataset_name"], p["rows"], p["errors"], p["dim"])
        for p in listed["pairs"]
    ]
    assert pairs == [("simulated", "image_folder", 8, 1, 64), ("other", "image_folder", 8, 1, 64)]
    assert errors_of(table, "simulated") == errors_of(table, "other") == 1  # as the file holds
    assert [
        (i["name"], i["kind"], i["current"], i["rows"]) for i in listed["pairs"][0]["indexes"]
    ] == [
        ("faiss_hnsw", "faiss_hnsw", False, 8),
        ("flat", "flat", False, 8),
    ]
    assert listed["pairs"][1]["indexes"] == []
    assert (listed["form"], listed["kind"], listed["dtype"]) == (
        "folder" if folder else "file",
        "image",
        "float32",
    )
    assert (listed["rows"], listed["errors"]) == (16, 2)
    assert listed["created"] == metadata["created"] and listed["versions"]["img_search"]
    files = [*table.glob("part-*.parquet"), table / "_common_metadata"] if folder else [table]
    assert listed["size_bytes"] == sum(f.stat().st_size for f in files)
    assert listed["errors_file"] == str(TableLayout(table).errors_path)

    text = run_info(f"table={table}").stdout  # the summary, for people
    assert text.count("STALE") == 2 and "faiss_hnsw STALE, flat STALE" in text
    assert f"rebuild them: img-search build table={table}" in text
    assert "│ other     │ image_folder │    8 │      1 │  64 │" in text

    api = img_search.open_table(table, model_name="other").info()  # the whole table
    assert api.as_dict() == listed
    assert [i.current for i in api.pairs[0].indexes] == [False, False] and len(api.stale) == 2

    cli_runner("img_search.search.build")(f"table={table}")  # the command info gives
    listed = json.loads(run_info(str(table), "json=true").stdout)
    assert [(i["name"], i["current"]) for i in listed["pairs"][0]["indexes"]] == [
        ("faiss_hnsw", True),
        ("flat", True),
    ]
    assert "STALE" not in run_info(str(table)).stdout


def test_info_of_a_missing_table_is_one_line(tmp_path):
    result = run_module("img_search.search.info", str(tmp_path / "none.parquet"))
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"embedding table not found: {tmp_path / 'none.parquet'}")
    helped = run_module("img_search.search.info", "--help")
    assert helped.returncode == 0 and "img-search info out/demo/images.parquet" in helped.stdout
