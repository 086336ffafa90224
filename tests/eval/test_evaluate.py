"""Evaluation: caption↔image recall, INQUIRE-Rerank and the ANN benchmark, by hand and end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_runner

from img_search.eval.evaluation import (
    InquireQuery,
    caption_image_retrieval,
    group_queries,
    inquire_rerank,
)
from img_search.eval.metrics import inquire_rerank_metrics, recall_at_k
from img_search.search.table_encoder import ModelMismatch
from img_search.store import read_embeddings
from img_search.store.selection import TableSelection, load_selection


def selection(ids, vectors, kind="image", fingerprint="f", **extra) -> TableSelection:
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return TableSelection(
        path=Path(f"{kind}.parquet"),
        model_name="m",
        dataset_name="d",
        kind=kind,
        ids=np.asarray(ids, dtype=str),
        vectors=vectors,
        identity={"fingerprint": fingerprint, "checkpoint": fingerprint},
        model_spec={},
        dataset={},
        extra={k: np.asarray(v, dtype=str) for k, v in extra.items()},
    )


# -- by hand --------------------------------------------------------------------

IMAGES = selection(["x/a.jpg", "b", "c.png"], np.eye(3))
CAPTIONS = selection(
    ["a#0", "a#1", "b#0", "c#0", "d#0"],
    [[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1], [0, 0.6, 0.8], [1, 1, 1]],
    kind="caption",
    image_id=["a", "a", "b", "c", "d"],
)


@pytest.mark.parametrize("cells", [2**26, 1])  # one block, or one query per block
def test_caption_image_recall_by_hand(cells):
    result = caption_image_retrieval(IMAGES, CAPTIONS, ks=(1, 2, 3), max_chunk_cells=cells)
    # d#0 has no image; images join on id stem ("x/a.jpg" → a, "c.png" → c)
    assert (result.images, result.captions, result.dropped_captions) == (3, 4, 1)
    # text→image ranks of the right image: a#0 1, a#1 2 (B .8 > A .6), b#0 3 (C 1, then the
    # A/B tie at 0 in candidate order), c#0 1
    assert result.text_to_image == {1: 2 / 4, 2: 3 / 4, 3: 4 / 4}
    # image→text: A finds a#0 first; B's only caption b#0 is 4th (a#1 .8, c#0 .6, a#0 0 = b#0 0);
    # C ranks b#0 (1) before its own c#0 (.8)
    assert result.image_to_text == {1: 1 / 3, 2: 2 / 3, 3: 2 / 3}


def test_tables_of_two_models_are_refused():
    other = selection(
        CAPTIONS.ids, CAPTIONS.vectors, "caption", "g", image_id=CAPTIONS.extra["image_id"]
    )
    with pytest.raises(ModelMismatch, match="different models"):
        caption_image_retrieval(IMAGES, other)


def test_inquire_rerank_by_hand():
    images = selection(
        ["f1", "f2", "f4"], [[0.9, np.sqrt(1 - 0.81)], [0.1, np.sqrt(0.99)], [0.5, np.sqrt(0.75)]]
    )
    query = InquireQuery("q", ["f1", "f2", "f3", "f4"], [0, 1, 1, 0])
    result = inquire_rerank("test", [query], np.array([[1.0, 0.0]], dtype=np.float32), images, [2])
    assert result.queries == 1 and result.missing_candidates == 1
    # ranked: f1 .9 (0), f4 .5 (0), f2 .1 (1), f3 missing → −2 (1)
    # AP = (1/3 + 2/4) / 2 · 2/min(2, 4) = 5/12; MRR 1/3
    # nDCG = (1/log2 4 + 1/log2 5) / (1 + 1/log2 3) = 0.930677 / 1.630930
    assert result.metrics["AP"] == pytest.approx(100 * 5 / 12)
    assert result.metrics["MRR"] == pytest.approx(1 / 3)
    assert result.metrics["nDCG"] == pytest.approx(100 * 0.930677 / 1.630930, abs=1e-4)
    assert result.metrics["rerank_AP@2"] == 0.0  # no relevant item in the top 2


def test_group_queries_keeps_candidate_order():
    rows = {
        "query": ["b", "a", "b", "a"],
        "inat24_file_name": ["1", "2", "3", "4"],
        "relevant": [1, 0, 0, 1],
    }
    grouped = group_queries(rows)
    assert [(q.query, q.candidates, q.relevant) for q in grouped] == [
        ("b", ["1", "3"], [1, 0]),
        ("a", ["2", "4"], [0, 1]),
    ]


# -- end to end, tiny CLIP ------------------------------------------------------


@pytest.fixture(scope="module")
def flickr_tables(tiny_checkpoints, tmp_path_factory):
    from img_search.testing.fixtures import write_flickr30k_like

    root = tmp_path_factory.mktemp("flickr")
    write_flickr30k_like(root / "data", n_images=12)
    images, captions = root / "images.parquet", root / "captions.parquet"
    model = ["models=clip", f"models.clip.model_name={tiny_checkpoints['clip']}"]
    cli_runner("img_search.pipeline.embed")(
        *model,
        "datasets=flickr30k",
        f"datasets.flickr30k.path={root / 'data'}",
        f"output_path={images}",
    )
    cli_runner("img_search.pipeline.embed_text")(
        *model,
        "text_dataset=flickr30k_captions",
        f"text_dataset.path={root / 'data'}",
        f"output_path={captions}",
    )
    return images, captions


def brute_force_recall(queries, candidates, positive_sets, k):
    hits = 0
    for q, positives in zip(queries, positive_sets, strict=True):
        scores = candidates @ q
        order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
        hits += any(j in positives for j in order[:k])
    return hits / len(queries)


def test_retrieval_cli_equals_brute_force(flickr_tables, run_evaluate, tmp_path):
    images, captions = flickr_tables
    out = tmp_path / "retrieval.json"
    result = run_evaluate(
        "task=retrieval", f"images={images}", f"captions={captions}", f"output={out}", "json=true"
    )
    got = json.loads(result.stdout)
    assert got == json.loads(out.read_text())
    assert (got["images"], got["captions"], got["dropped_captions"]) == (12, 60, 0)
    image_sel, caption_sel = load_selection(images), load_selection(captions)
    image_rows = {i: r for r, i in enumerate(image_sel.ids)}
    owner = [image_rows[i] for i in caption_sel.extra["image_id"]]
    for k in (1, 5, 10):
        t2i = brute_force_recall(caption_sel.vectors, image_sel.vectors, [{o} for o in owner], k)
        i2t = brute_force_recall(
            image_sel.vectors,
            caption_sel.vectors,
            [{c for c, o in enumerate(owner) if o == r} for r in range(12)],
            k,
        )
        assert got[f"text_to_image_R@{k}"] == pytest.approx(t2i)
        assert got[f"image_to_text_R@{k}"] == pytest.approx(i2t)
    assert got["image_to_text_R@10"] >= got["image_to_text_R@1"]


def test_retrieval_refuses_another_checkpoint(
    flickr_tables, tiny_checkpoints, tmp_path, run_evaluate
):
    images, _ = flickr_tables
    other = tmp_path / "clip-copy"
    shutil.copytree(tiny_checkpoints["clip"], other)
    captions = tmp_path / "captions.parquet"
    cli_runner("img_search.pipeline.embed_text")(
        "models=clip",
        f"models.clip.model_name={other}",
        "text_dataset=flickr30k_captions",
        f"text_dataset.path={images.parent / 'data'}",
        f"output_path={captions}",
    )
    result = run_evaluate(
        "task=retrieval", f"images={images}", f"captions={captions}", expect_ok=False
    )
    assert result.returncode == 2 and "embedded by different models" in result.stderr


def test_inquire_cli_equals_direct_computation(
    tiny_checkpoints, inquire_dir, tmp_path, run_evaluate
):
    from img_search.embedding import get_encoder
    from img_search.eval.evaluation import read_inquire_labels

    root, _ = inquire_dir
    images = tmp_path / "inquire.parquet"
    cli_runner("img_search.pipeline.embed")(
        "models=clip",
        f"models.clip.model_name={tiny_checkpoints['clip']}",
        "datasets=inquire",
        f"datasets.inquire.path={root}",
        f"output_path={images}",
    )
    result = run_evaluate("task=inquire", f"images={images}", f"inquire.path={root}", "json=true")
    got = json.loads(result.stdout)["splits"]
    assert sorted(got) == ["test", "validation"]
    table = read_embeddings(images)
    vectors = dict(zip(table.ids, table.vectors, strict=True))
    encoder = get_encoder({"model": "clip", "model_name": str(tiny_checkpoints["clip"])}).load()
    for split in ("validation", "test"):
        queries = read_inquire_labels(str(root), split)
        assert got[split]["queries"] == len(queries) and got[split]["missing_candidates"] == 0
        per_query = []
        for q in queries:
            text = encoder.encode_texts([q.query]).numpy()[0]
            scores = np.array([vectors[c] @ text for c in q.candidates])
            per_query.append(inquire_rerank_metrics(np.array(q.relevant), scores))
        for name in ("AP", "nDCG", "MRR"):
            expected = np.mean([m[name] for m in per_query])
            assert got[split][name] == pytest.approx(expected, abs=1e-4)
        assert 0 <= got[split]["rerank_AP@10"] <= 100


def test_ann_cli_writes_one_csv_row_per_index(run_evaluate, tmp_path):
    out = tmp_path / "ann.csv"
    result = run_evaluate(
        "task=ann",
        "ann.random.count=4000",
        "ann.random.dim=32",
        "ann.random.clusters=40",
        "ann.queries=100",
        "ann.single_seconds=0.05",
        f"output={out}",
    )
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == ["exact", "faiss_hnsw", "faiss_ivf", "usearch"]
    assert float(rows[0]["recall"]) == 1.0
    assert all(0.5 <= float(r["recall"]) <= 1.0 for r in rows)
    assert all(int(r["rows"]) == 4000 and int(r["queries"]) == 100 for r in rows)
    assert "recall@10" in result.stdout and "faiss_hnsw" in result.stdout
    assert "ANN: 4,000 × 32 from random unit vectors" in result.stdout  # the count asked for


def test_ann_keeps_the_k_it_was_asked_for_on_a_small_table(demo_tables, run_evaluate):
    """Before: 7 indexed photos and ann.k=10 became recall@7, silently."""
    result = run_evaluate(
        "task=ann", f"ann.table={demo_tables['images']}", "ann.single_seconds=0.01", "json=true"
    )
    rows = json.loads(result.stdout)["results"]
    assert [(r["name"], r["rows"], r["k"], r["recall"]) for r in rows] == [
        ("exact", 7, 10, 1.0),
        ("faiss_hnsw", 7, 10, 1.0),
        ("faiss_ivf", 7, 10, 1.0),
        ("usearch", 7, 10, 1.0),
    ]
    assert "7 vectors indexed, fewer than k=10: recall@10 counts all 7" in result.stderr
    assert "WARNING clustering" not in result.stderr  # FAISS k-means on 7 points: not a word


def test_ann_cli_on_a_table(demo_tables, run_evaluate, tmp_path):
    table = tmp_path / "captions.parquet"  # a copy: nothing may appear next to it
    shutil.copy(demo_tables["captions"], table)
    options = ["task=ann", f"ann.table={table}", "indexes=[faiss_hnsw]", "ann.k=5"]
    options.append("ann.single_seconds=0.05")
    printed = run_evaluate(*options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.parquet"]
    assert "faiss_hnsw" in printed.stdout and "ann benchmark" in printed.stderr  # progress
    out = tmp_path / "results" / "ann.csv"
    result = run_evaluate(*options, f"output={out}", "plot=true")
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == ["exact", "faiss_hnsw"]
    assert int(rows[1]["rows"]) == 29 and int(rows[1]["queries"]) == 3  # 10% held out as queries
    assert float(rows[1]["recall"]) == 1.0
    figure = out.with_suffix(".png")
    assert f"figure: {figure}" in result.stdout.replace("\n", "")
    assert_png_drawn(figure)


def assert_png_drawn(path):
    """A PNG that decodes and is not blank (more than one distinct pixel value)."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100
        assert image.convert("RGB").getcolors(maxcolors=1) is None  # None: more colours than 1


def test_unknown_task_and_missing_table(run_evaluate):
    result = run_evaluate("task=speed", expect_ok=False)
    assert result.returncode == 2
    assert "choose one of retrieval, inquire, inquire_fullrank, ann" in result.stderr
    result = run_evaluate("task=retrieval", expect_ok=False)
    assert result.returncode == 2 and "task=retrieval needs images=<table.parquet>" in result.stderr


def test_recall_helper_matches_on_this_small_case():
    scores = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert recall_at_k(scores, np.eye(2, dtype=bool), [1, 2]) == {1: 0.0, 2: 1.0}


def test_captions_join_on_their_file_before_the_stem():
    from img_search.store.captions import image_of_caption

    images = np.array(["birds/1.jpg", "cats/1.jpg", "dogs/2.jpg", "3"], dtype=object)
    rows = image_of_caption(
        images,
        caption_image_ids=np.array(["1", "1", "1", "2", "3", "4"]),
        caption_images=np.array(["cats/1.jpg", "birds/1.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg"]),
    )
    # exact file first; "1.jpg" is in two folders: never guessed; "2" names one image; "3" is an id
    assert list(rows) == [1, 0, -1, 2, 3, -1]


def test_inquire_without_the_hub_is_one_line(demo_tables, run_evaluate):
    """The default ``inquire.path`` is a Hub id: offline, one line naming the local override."""
    result = run_evaluate("task=inquire", f"images={demo_tables['images']}", expect_ok=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert len(lines) == 1 and "Traceback" not in result.stderr, lines
    assert lines[0].endswith("use a local copy: inquire.path=<local copy in the Hub layout>")
