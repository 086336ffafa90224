"""Block-streamed exact top-k against numpy's argsort over the whole score matrix.

The vectors hold multiples of 1/8 in [-1, 1] (exact in float16 and float32),
so every dot product is a multiple of 1/64 that float32 holds exactly, summed
in any order: the streamed scores and numpy's are the same numbers, and the
ranking rule (higher score, then lower row) can be checked to the last tie.
Ties are everywhere: few distinct score values among 200k rows, each query's
best vector copied to many rows (more than k for half of the queries, so the
whole top k is one tie spread over many blocks), and a zero query that ties
every row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from img_search.search.exact import RunningTopK, exact_top_k
from img_search.search.kinds import FlatIndex
from img_search.store import schema as S
from img_search.store import vectors_to_arrow
from img_search.store.selection import load_selection
from img_search.store.writer import table_schema, with_metadata
from img_search.testing.tables import rewrite_as_before, write_embedding_table

N, DIM, K = 200_000, 64, 50
#: 3001 rows of float32 (6002 of float16) a block: 67 (34) blocks, boundaries inside parts
BLOCK_BYTES = 3001 * DIM * 4
FOLDER_PARTS = (70_001, 59_999, 70_000)


def eighths(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return (rng.integers(-8, 9, shape) / 8).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, vectors, queries): 16 queries and the zero vector."""
    rng = np.random.default_rng(13)
    vectors = eighths(rng, (N, DIM))
    queries = np.vstack([eighths(rng, (16, DIM)), np.zeros((1, DIM), np.float32)])
    best = np.argmax(queries[:16] @ vectors.T, axis=1)
    for query, row in enumerate(best):
        copies = rng.choice(N, size=60 if query % 2 == 0 else 7, replace=False)
        vectors[copies] = vectors[row]
    ids = np.array([f"img/{i:07d}.jpg" for i in range(N)], dtype=object)
    return ids, vectors, queries


def chunks(ids: np.ndarray, vectors: np.ndarray, size: int = 25_000):
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size]), vectors[start : start + size]


def argsort_top_k(queries: np.ndarray, vectors: np.ndarray, k: int):
    scores = queries @ vectors.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(scores, rows, axis=1)


@pytest.fixture(
    scope="module",
    params=[
        "float32 file",
        "float16 file",
        "float32 folder",
        "float16 folder",
        "float32 file before",
        "float16 folder before",
    ],
)
def table(request, tmp_path_factory, data) -> Path:
    """The rows as each table form and dtype holds them; ``before``: as img_search wrote them
    before vectors were stored plain (Snappy, dictionary, and ``list<half>`` parts)."""
    dtype, form, *before = request.param.split()
    ids, vectors, _ = data
    root = tmp_path_factory.mktemp("exact")
    if form == "file":
        path = root / "images.parquet"
        parts = [("clip", "inat", chunks(ids, vectors))]
    else:
        path = root / "images"
        ends = np.cumsum(FOLDER_PARTS)
        parts = [
            ("clip", "inat", chunks(ids[end - size : end], vectors[end - size : end]))
            for size, end in zip(FOLDER_PARTS, ends, strict=True)
        ]
    write_embedding_table(path, parts, output_dtype=dtype)
    if before:
        rewrite_as_before(path)
    return path


def test_test_data_ties_across_the_cut(data) -> None:
    """The k-th and (k+1)-th scores are equal for most queries: the tie rule decides who is in."""
    _, vectors, queries = data
    scores = -np.sort(-(queries @ vectors.T), axis=1)
    assert (scores[:, K - 1] == scores[:, K]).sum() >= 12
    assert (scores[0::2][:8, 0] == scores[0::2][:8, K]).all()  # 61 copies of the best vector


def test_streamed_top_k_equals_argsort(table: Path, data) -> None:
    ids, vectors, queries = data
    found = exact_top_k(table, queries, K, block_bytes=BLOCK_BYTES)
    rows, scores = argsort_top_k(queries, vectors, K)
    assert found.scanned == N
    np.testing.assert_array_equal(found.rows, rows)
    np.testing.assert_array_equal(found.scores, scores)
    np.testing.assert_array_equal(found.ids, ids[rows])
    np.testing.assert_array_equal(found.rows[-1], np.arange(K))  # the zero query ties every row


@pytest.mark.parametrize("table", ["float16 folder"], indirect=True)
def test_block_size_does_not_change_the_answer(table: Path, data) -> None:
    """Blocks smaller than k, one row, and the whole selection at once; ``max_rows`` cuts in a block."""
    _, vectors, queries = data
    rows, scores = argsort_top_k(queries, vectors[:5_000], K)
    for block_bytes in (40 * DIM * 4, 1, 10**9):
        if block_bytes == 1:
            found = exact_top_k(table, queries, 7, block_bytes=1, max_rows=300)
            expected = argsort_top_k(queries, vectors[:300], 7)[0]
            np.testing.assert_array_equal(found.rows, expected)
            continue
        found = exact_top_k(table, queries, K, block_bytes=block_bytes, max_rows=5_000)
        assert found.scanned == 5_000
        np.testing.assert_array_equal(found.rows, rows)
        np.testing.assert_array_equal(found.scores, scores)


@pytest.mark.parametrize("table", ["float32 file"], indirect=True)
def test_fewer_rows_than_k(table: Path, data) -> None:
    _, vectors, queries = data
    found = exact_top_k(table, queries[:2], K, block_bytes=16 * DIM * 4, max_rows=30)
    assert found.rows.shape == (2, 30)
    np.testing.assert_array_equal(found.rows, argsort_top_k(queries[:2], vectors[:30], 30)[0])


def test_continuous_vectors_within_float_rounding(tmp_path: Path) -> None:
    """Real-valued unit vectors: the block products may differ from numpy's in the last bit only."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((30_000, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[1000:1100] = vectors[7]  # duplicates of one vector
    queries = np.vstack([vectors[7], rng.standard_normal((9, DIM)).astype(np.float32)])
    ids = np.array([f"{i}" for i in range(len(vectors))], dtype=object)
    path = tmp_path / "t.parquet"
    write_embedding_table(path, [("m", "d", chunks(ids, vectors, 7_000))], output_dtype="float16")
    reference = load_selection(path).vectors
    found = exact_top_k(path, queries, K, block_bytes=1_000 * DIM * 2)
    _, scores = argsort_top_k(queries, reference, K)
    np.testing.assert_allclose(found.scores, scores, rtol=1e-6)
    own = np.take_along_axis(queries @ reference.T, found.rows, axis=1)
    np.testing.assert_allclose(own, found.scores, rtol=1e-6)
    np.testing.assert_array_equal(found.rows[0], [7, *range(1000, 1000 + K - 1)])


@pytest.mark.parametrize("form", ["one.parquet", "folder"])
def test_model_and_dataset_selection(tmp_path: Path, form: str) -> None:
    """Two models (64-d and 32-d) and two datasets; one pair's rows in two parts, others between."""
    rng = np.random.default_rng(3)

    def rows(prefix: str, count: int, dim: int):
        ids = [f"{prefix}/{i}" for i in range(count)]
        return [(ids, eighths(rng, (count, dim)))]

    path = tmp_path / form
    write_embedding_table(
        path,
        [
            ("clip", "inat", rows("a", 3_000, DIM)),
            ("siglip", "inat", rows("b", 2_000, 32)),
            ("clip", "flickr", rows("c", 1_500, DIM)),
            ("clip", "inat", rows("d", 2_500, DIM)),
        ],
    )
    queries = eighths(rng, (5, DIM))
    selection = load_selection(path, "clip", "inat")
    found = exact_top_k(path, queries, K, "clip", "inat", block_bytes=700 * DIM * 4)
    expected, scores = argsort_top_k(queries, selection.vectors, K)
    assert found.scanned == 5_500
    np.testing.assert_array_equal(found.rows, expected)
    np.testing.assert_array_equal(found.scores, scores)
    np.testing.assert_array_equal(found.ids, selection.ids[expected])
    short = exact_top_k(path, queries[:, :32], 5, "siglip", "inat", progress=True)
    assert all(i.startswith("b/") for i in short.ids.ravel())
    with pytest.raises(ValueError, match="several values of model_name"):
        exact_top_k(path, queries, K)
    with pytest.raises(ValueError, match="queries must come from the table's model"):
        exact_top_k(path, queries[:, :32], K, "clip", "inat")


def test_running_top_k_without_ids_and_nan_rows() -> None:
    """A NaN vector ranks last (as -inf); rows without ids give ``ids=None``."""
    vectors = np.array([[np.nan, 0.0], [1.0, 0.0], [0.5, 0.0], [1.0, 0.0]], np.float32)
    running = RunningTopK(np.array([[1.0, 0.0]]), 3)
    running.add(vectors[:2])
    running.add(vectors[2:])
    found = running.result()
    assert found.ids is None and found.scanned == 4
    np.testing.assert_array_equal(found.rows, [[1, 3, 2]])
    with pytest.raises(ValueError, match="k must be at least 1"):
        RunningTopK(np.ones((1, 2)), 0)


@pytest.mark.parametrize("statistics", [True, False])
def test_row_groups_that_mix_selections(tmp_path: Path, statistics: bool) -> None:
    """A file written by another tool: models interleaved within row groups, with or without statistics."""
    rng = np.random.default_rng(4)
    count = 6_000
    vectors = eighths(rng, (count, DIM))
    models = np.where(rng.random(count) < 0.5, "clip", "siglip")
    schema = with_metadata(table_schema(DIM, "float32"), {"kind": "image"})
    table = pa.table(
        {
            S.ID: [f"{i}" for i in range(count)],
            S.MODEL: models,
            S.DATASET: ["inat"] * count,
            S.EMBEDDING: vectors_to_arrow(vectors),
        },
        schema=schema,
    )
    path = tmp_path / "mixed.parquet"
    pq.write_table(table, path, row_group_size=1_000, write_statistics=statistics)
    queries = eighths(rng, (4, DIM))
    found = exact_top_k(path, queries, K, "siglip", "inat", block_bytes=300 * DIM * 4)
    selection = load_selection(path, "siglip", "inat")
    expected, _ = argsort_top_k(queries, selection.vectors, K)
    assert found.scanned == (models == "siglip").sum()
    np.testing.assert_array_equal(found.ids, selection.ids[expected])


@pytest.mark.parametrize("table", ["float16 folder"], indirect=True)
def test_torch_product_and_three_decoding_threads(table: Path, data) -> None:
    """The products by torch (as on a GPU, here on the CPU) while three threads decode the three
    parts at once: the same rows and scores as numpy's argsort."""
    ids, vectors, queries = data
    found = exact_top_k(table, queries, K, block_bytes=BLOCK_BYTES, threads=3, device="cpu")
    rows, scores = argsort_top_k(queries, vectors, K)
    np.testing.assert_array_equal(found.rows, rows)
    np.testing.assert_array_equal(found.scores, scores)
    np.testing.assert_array_equal(found.ids, ids[rows])


def test_flat_index_ranks_like_exact_search(data) -> None:
    """The ``flat`` index (query, Table.search, the server, the ANN reference) uses the same block
    top-k: ties by lower position, and FAISS's padding when k exceeds the rows."""
    _, vectors, queries = data
    index = FlatIndex(DIM)
    index.add(vectors[:40_000])
    scores, rows = index.search(queries, K)
    expected, expected_scores = argsort_top_k(queries, vectors[:40_000], K)
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(scores, expected_scores)
    small = FlatIndex(DIM)
    small.add(vectors[:3])
    scores, rows = small.search(queries[:1], 5)
    np.testing.assert_array_equal(rows[0, 3:], [-1, -1])
    assert (scores[0, 3:] == np.finfo(np.float32).min).all()
    np.testing.assert_array_equal(rows[0, :3], argsort_top_k(queries[:1], vectors[:3], 3)[0][0])
