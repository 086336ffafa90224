"""Build every index kind next to a table, reload them without rebuilding, refuse stale ones."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from img_search.search.indexes import StaleIndex, index_dir, load_index, open_index
from img_search.store.selection import load_selection

KINDS = ["flat", "faiss_hnsw", "faiss_ivf", "usearch"]


@pytest.fixture(scope="module")
def built(demo_tables, tmp_path_factory):
    """A copy of the demo caption table with all four indexes built by the CLI."""
    from conftest import cli_runner

    table = tmp_path_factory.mktemp("build") / "captions.parquet"
    shutil.copy(demo_tables["captions"], table)
    result = cli_runner("img_search.search.build")(f"table={table}", f"indexes=[{','.join(KINDS)}]")
    return table, result


def test_each_kind_is_saved_next_to_the_table(built):
    table, result = built
    for kind in KINDS:
        path = index_dir(table, "minilm", "sample_captions", kind)
        assert path.parent == table.parent
        library_file = "index.usearch" if kind == "usearch" else "index.faiss"
        assert sorted(os.listdir(path)) == sorted(["ids.parquet", "index.json", library_file])
        meta = json.loads((path / "index.json").read_text())
        assert meta["kind"] == kind and meta["count"] == 32 and meta["dim"] == 384
        assert (
            meta["model_name"] == "minilm"
            and meta["identity"]["encoder"] == "sentence_transformers"
        )
        assert f" {kind} " in result.stdout  # one row of the summary table per index


@pytest.mark.parametrize("kind", KINDS)
def test_reloaded_index_answers_like_exact_search(built, kind):
    table, _ = built
    selection = load_selection(table)
    saved = load_index(index_dir(table, "minilm", "sample_captions", kind))
    assert list(saved.ids) == list(selection.ids)
    scores, positions = saved.search(selection.vectors, 5)
    expected = np.argsort(-(selection.vectors @ selection.vectors.T), axis=1)[:, :5]
    # every caption finds itself first; 32 items is small enough for every kind to be exact
    assert (positions[:, 0] == np.arange(32)).all()
    np.testing.assert_array_equal(np.sort(positions, axis=1), np.sort(expected, axis=1))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_a_rewritten_table_makes_its_index_stale(built, tmp_path):
    table, _ = built
    copy = tmp_path / table.name
    shutil.copy(table, copy)
    first = open_index(copy)  # builds and saves flat
    assert first.path.exists()
    os.utime(copy, ns=(1, 1))  # the table is "rewritten"
    with pytest.raises(StaleIndex, match="rebuild it"):
        load_index(first.path)
    rebuilt = open_index(copy)  # a table path rebuilds a stale index by itself
    assert load_index(rebuilt.path).meta["table_stamp"]["mtime_ns"] == 1


def test_unknown_index_kind_lists_the_registered_ones(demo_tables, run_build):
    result = run_build(
        f"table={demo_tables['captions']}", "+indexes.mine.kind=annoy", expect_ok=False
    )
    assert result.returncode == 2
    assert "unknown kind 'annoy'" in result.stderr
    assert "faiss_hnsw, faiss_ivf, flat, milvus, usearch" in result.stderr


def test_an_unwritable_folder_still_answers(demo_tables, tmp_path, monkeypatch):
    from img_search.search import indexes

    def refuse(saved):
        raise PermissionError(13, "Permission denied", str(saved.path))

    monkeypatch.setattr(indexes, "_write", refuse)
    table = tmp_path / "captions.parquet"
    shutil.copy(demo_tables["captions"], table)
    saved = open_index(table)
    assert len(saved.ids) == 32 and not saved.path.exists()
    assert saved.search(saved.index.vector(0)[None, :], 1)[1][0, 0] == 0


def test_a_moved_table_keeps_its_index(built, tmp_path):
    table, _ = built
    before = tmp_path / "before"
    before.mkdir()
    shutil.copy2(table, before / table.name)  # copy2 keeps the mtime: the same table
    first = open_index(before / table.name, name="faiss_ivf", kind="faiss_ivf")
    after = tmp_path / "after"
    before.rename(after)
    for path in (after / table.name, after / first.path.name):  # by the table, by the folder
        moved = open_index(path, name="faiss_ivf", kind="faiss_ivf")
        assert moved.table == (after / table.name).resolve()
        assert moved.meta["build_seconds"] == first.meta["build_seconds"]  # reloaded, not rebuilt
        np.testing.assert_allclose(moved.vector(3), first.vector(3))  # IVF reads vectors back


def simulated(key: str, seed: int) -> list[str]:
    """A model key of the simulated model (no weights; its seed makes other vectors)."""
    return [f"+models.{key}.model=simulated", f"+models.{key}.seed={seed}"]


@pytest.mark.parametrize("form", ["file", "folder"])
def test_build_with_no_index_named_rebuilds_every_stale_index_after_a_model_is_appended(
    form, tmp_path, run_embed, run_build, run_query
):
    from conftest import SAMPLE_PHOTOS

    from img_search.search.table_indexes import saved_indexes

    table = tmp_path / ("photos.parquet" if form == "file" else "photos")
    photos = ["datasets=image_folder", f"datasets.image_folder.path={SAMPLE_PHOTOS}"]
    first = ["models=simulated", "models.simulated.batch_seconds=0"]
    run_embed(*first, *photos, f"output_path={table}")
    run_build(f"table={table}", "indexes=[flat,faiss_hnsw,faiss_ivf]")
    assert [(e.name, e.current) for e in saved_indexes(table)] == [
        ("faiss_hnsw", True),
        ("faiss_ivf", True),
        ("flat", True),
    ]
    run_embed(*first, *simulated("other", 1), *photos, f"output_path={table}")  # appended
    assert [e.current for e in saved_indexes(table)] == [False, False, False]

    hnsw = index_dir(table, "simulated", "image_folder", "faiss_hnsw")
    refused = run_query(f"index={hnsw}", "id=rocket.jpg", expect_ok=False)
    assert refused.returncode == 2
    hint = refused.stderr.split("rebuild it (", 1)[1].split(" rebuilds every", 1)[0]
    assert hint == f"img-search build table={table}"

    rebuilt = run_build(*hint.split()[2:])  # the command the message gives, as it is
    assert [(e.name, e.model_name, e.current) for e in saved_indexes(table)] == [
        ("faiss_hnsw", "simulated", True),
        ("faiss_ivf", "simulated", True),
        ("flat", "simulated", True),
    ]
    assert rebuilt.stdout.count(" rebuilt ") == 3
    for kind in ("flat", "faiss_hnsw", "faiss_ivf"):
        saved = load_index(index_dir(table, "simulated", "image_folder", kind))
        assert saved.meta["count"] == 8 and saved.model_name == "simulated"
    found = run_query(f"index={hnsw}", "id=rocket.jpg", "k=3", "json=true")
    assert len(json.loads(found.stdout)["hits"]) == 3
    again = run_build(f"table={table}")  # nothing stale: nothing rebuilt
    assert again.stdout.count(" current ") == 3 and " rebuilt " not in again.stdout


def test_build_with_no_index_named_builds_flat_on_a_table_without_indexes(
    demo_tables, tmp_path, run_build
):
    table = tmp_path / "captions.parquet"
    shutil.copy(demo_tables["captions"], table)
    result = run_build(f"table={table}")
    assert " built " in result.stdout
    assert load_index(index_dir(table, "minilm", "sample_captions", "flat")).meta["count"] == 32
