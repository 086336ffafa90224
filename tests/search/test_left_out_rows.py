"""Rows whose vector is NaN, infinite or null: one policy (``store.vectors``) everywhere.

Two tables of 60 random unit vectors with the demo image table's metadata
(EfficientNet-Lite0, 1280-d): one with NaN and infinite rows, one with null
rows. Every index kind, exact search, the readers and the query command line
must leave those rows out, say how many, and give the hits numpy gives over
the others. Before: usearch returned NaN-score hits first and ``json=true``
printed a bare NaN, ``faiss_ivf`` died building, and one null row made
``open_table(...).vectors`` (8, 1120) and ``query`` an AssertionError.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from img_search import open_table
from img_search.search.exact import exact_top_k
from img_search.search.indexes import build_index, load_index
from img_search.store import read_embeddings
from img_search.store.selection import load_selection
from img_search.store.vectors import NOT_FINITE, NULL
from img_search.testing.tables import expected_hits, table_with_left_out_rows

K, QUERY = 5, 0
KINDS = ["flat", "faiss_hnsw", "faiss_ivf", "usearch", "milvus"]


@dataclass
class Damaged:
    damage: str
    path: Path
    ids: list[str]
    vectors: np.ndarray
    bad: dict[str, str]  # id → reason it is left out
    expected: list[str]  # numpy's K nearest to row QUERY among the others

    @property
    def warned(self) -> str:
        counts = {"nan": "3 not finite", "null": "2 null"}[self.damage]
        return f"{len(self.bad)} rows with null or non-finite vectors are left out ({counts}:"


@pytest.fixture(scope="module", params=["nan", "null"])
def damaged(request, demo_tables, tmp_path_factory) -> Damaged:
    path = tmp_path_factory.mktemp(f"damaged-{request.param}") / "table.parquet"
    ids, vectors, bad = table_with_left_out_rows(demo_tables["images"], path, request.param)
    expected = expected_hits(ids, vectors, bad, QUERY, K)
    return Damaged(request.param, path, ids, vectors, bad, expected)


def strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_readers_leave_the_rows_out_and_name_them(damaged, caplog):
    good = [i for i, item in enumerate(damaged.ids) if item not in damaged.bad]
    with caplog.at_level(logging.WARNING):
        table = open_table(damaged.path)
        assert table.vectors.shape == (len(good), 1280)  # never a matrix of shifted rows
        assert list(table.ids) == [damaged.ids[i] for i in good]
        np.testing.assert_array_equal(table.vectors, damaged.vectors[good])
        assert table.left_out == damaged.bad
        assert damaged.warned in caplog.text
        assert all(repr(item) in caplog.text for item in damaged.bad)
        matrix = read_embeddings(damaged.path)
    assert list(matrix.ids) == list(table.ids) and matrix.left_out.reasons() == damaged.bad
    np.testing.assert_array_equal(matrix.vectors, table.vectors)


@pytest.mark.parametrize("kind", KINDS)
def test_every_index_kind_gives_the_hits_of_numpy(damaged, kind, caplog):
    if kind == "milvus":
        pytest.importorskip("milvus_lite", reason="img_search[milvus] is not installed")
    with caplog.at_level(logging.WARNING):
        saved = build_index(load_selection(damaged.path), kind, kind, {})
    assert damaged.warned in caplog.text
    try:
        counts = {
            "null": 2 * (damaged.damage == "null"),
            "not_finite": 3 * (damaged.damage == "nan"),
        }
        assert saved.meta["left_out"] == counts and saved.meta["count"] == 60 - len(damaged.bad)
        assert saved.left_out == damaged.bad
        hits = saved.top_k(damaged.vectors[QUERY], K, exclude=damaged.ids[QUERY])
        assert [item for _, item, _ in hits] == damaged.expected
        assert all(np.isfinite(score) for _, _, score in hits)
    finally:
        saved.close()
    reloaded = load_index(saved.path)
    try:
        assert reloaded.left_out == damaged.bad
        hits = reloaded.top_k(damaged.vectors[QUERY], K, exclude=damaged.ids[QUERY])
        assert [item for _, item, _ in hits] == damaged.expected
    finally:
        reloaded.close()


def test_exact_search_leaves_the_rows_out(damaged, caplog):
    with caplog.at_level(logging.WARNING):
        top = exact_top_k(damaged.path, damaged.vectors[[QUERY]], K + 1, block_bytes=20 * 1280 * 4)
    assert damaged.warned in caplog.text
    assert top.scanned == 60 - len(damaged.bad) and top.left_out.reasons() == damaged.bad
    assert list(top.ids[0][1:]) == damaged.expected and top.ids[0][0] == damaged.ids[QUERY]
    assert np.isfinite(top.scores).all()


def test_query_command_prints_strict_json_and_warns(damaged, tmp_path, run_query):
    table = Path(shutil.copy(damaged.path, tmp_path / "table.parquet"))  # no index yet
    query = ["id=item-00000", f"k={K}", "json=true"]
    result = run_query(f"index={table}", *query)  # builds the flat index, which warns
    assert [hit["id"] for hit in strict_json(result.stdout)["hits"]] == damaged.expected
    assert damaged.warned in " ".join(result.stderr.split())
    usearch = build_index(load_selection(table), "usearch", "usearch", {})
    result = run_query(f"index={usearch.path}", *query)
    hits = strict_json(result.stdout)["hits"]
    assert [hit["id"] for hit in hits] == damaged.expected
    assert all(np.isfinite(hit["score"]) for hit in hits)
    bad = next(iter(damaged.bad))
    refused = run_query(f"index={table}", f"id={bad}", "json=true", expect_ok=False)
    assert refused.returncode == 2 and refused.stdout == ""
    reason = {"nan": NOT_FINITE, "null": NULL}[damaged.damage]
    assert f"item {bad!r} of efficientnet_lite0 × image_folder in {table} is left out" in (
        " ".join(refused.stderr.split())
    )
    assert reason in refused.stderr and "Traceback" not in refused.stderr
