"""``img_search.open_table``: the rows of a table, and search and evaluation equal to the command line's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SAMPLE_PHOTOS, run_module

import img_search


@pytest.fixture(scope="module")
def clip_tables(sample_tables) -> dict[str, str]:
    """The sample photos and their captions, embedded by the tiny CLIP."""
    return sample_tables("clip")


def test_open_table_gives_unit_vectors_rows_and_metadata_of_its_selection(clip_tables) -> None:
    table = img_search.open_table(clip_tables["images"])
    assert (table.model_name, table.dataset_name) == ("clip", "image_folder")
    assert len(table) == 8 and table.vectors.shape == (8, 32) and table.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(table.vectors, axis=1), 1, atol=1e-5)
    frame = table.to_pandas()
    assert frame["id"].tolist() == table.ids.tolist()
    assert table.metadata["rows"] == 8
    with pytest.raises(FileNotFoundError, match="embedding table not found"):
        img_search.open_table(clip_tables["images"] + ".nope")


def test_search_equals_the_query_command(clip_tables) -> None:
    table = img_search.open_table(clip_tables["images"])
    for query in (
        ["text=a cup of coffee"],
        [f"image={SAMPLE_PHOTOS / 'coffee.jpg'}"],
        ["id=camera.jpg"],
    ):
        cli = run_module(
            "img_search.search.query",
            f"index={clip_tables['images']}",
            *query,
            "k=5",
            "json=true",
            "device=cpu",
        )
        assert cli.returncode == 0, cli.stderr[-2000:]
        expected = json.loads(cli.stdout)["hits"]
        key, value = query[0].split("=", 1)
        got = table.search(**{key: value}, k=5, device="cpu")
        assert [h.id for h in got] == [h["id"] for h in expected]
        np.testing.assert_allclose(
            [h.score for h in got], [h["score"] for h in expected], atol=1e-6
        )
        assert [h.path for h in got] == [h.get("path") for h in expected]
    first = table.search(vector=table.vectors[3] * 7, k=1)  # any length: made a unit vector
    assert first[0].id == table.ids[3] and first[0].score == pytest.approx(1, abs=1e-5)
    with pytest.raises(ValueError, match="exactly one of"):
        table.search(text="x", id="camera.jpg")
    captions = img_search.open_table(clip_tables["captions"])
    hits = captions.search(text="an astronaut", k=3, device="cpu")
    assert all(h.caption and h.image_id for h in hits)


def test_evaluate_equals_the_evaluate_command(clip_tables) -> None:
    table = img_search.open_table(clip_tables["images"])
    got = table.evaluate("retrieval", captions=clip_tables["captions"], ks=[1, 5])
    cli = run_module(
        "img_search.search.evaluate",
        "task=retrieval",
        f"images={clip_tables['images']}",
        f"captions={clip_tables['captions']}",
        "ks=[1,5]",
        "json=true",
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert got == json.loads(cli.stdout)
    # the README's example: a table opened with open_table, where a path goes
    captions = img_search.open_table(clip_tables["captions"])
    assert table.evaluate("retrieval", captions=captions, ks=[1, 5]) == got
    assert (
        table.evaluate("ann", ann={"table": table, "queries": 2, "single_seconds": 0.01})["source"]
        == f"{clip_tables['images']} (clip)"
    )
    assert img_search.open_table(captions).dataset_name == captions.dataset_name
    with pytest.raises(ValueError, match="unknown task 'recal'"):
        table.evaluate("recal")


def test_hits_make_a_dataframe_and_group_by_image(clip_tables) -> None:
    captions = img_search.open_table(clip_tables["captions"])
    query = captions.vectors[0]
    every = captions.search(vector=query, k=len(captions))
    frame = every.to_pandas()
    assert frame.columns.tolist() == ["rank", "id", "score", "caption", "image_id"]
    assert frame["id"].tolist() == [h.id for h in every] and len(frame) == 32
    assert isinstance(every, list) and every[0] is every[:1][0] and every[0].rank == 1
    grouped = captions.search(vector=query, k=5, group_by_image=True)
    best: dict[str, object] = {}
    for hit in every:
        best.setdefault(hit.image_id, hit)
    assert [h.image_id for h in grouped] == list(best)[:5]  # each image once, by its best score
    assert [(h.id, h.score) for h in grouped] == [
        (best[h.image_id].id, best[h.image_id].score) for h in grouped
    ]
    assert all(h.captions[0] == h.caption for h in grouped)
    assert grouped.to_pandas().columns.tolist()[-1] == "captions"
    assert len(captions.search(vector=query, k=8, group_by_image=True)) == 8  # every image
