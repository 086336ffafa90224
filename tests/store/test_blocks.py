"""Vector blocks decoded ahead on threads: table order, the left-out policy, memory, early stop, errors.

Real tables of many row groups (every write its own row group), read with 1 and
3 decoding threads, against the rows as written.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from img_search.store import writer as W
from img_search.store.blocks import vector_blocks
from img_search.store.reader import selection_row_groups, table_files
from img_search.store.vectors import NOT_FINITE
from img_search.testing.tables import write_embedding_table

DIM = 16


def vectors_of(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)


def chunks(prefix: str, vectors: np.ndarray, size: int = 50):
    for start in range(0, len(vectors), size):
        yield [f"{prefix}/{i}" for i in range(start, start + size)], vectors[start : start + size]


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, np.ndarray]:
    """A float16 folder table: clip's rows in two parts (600 and 400), siglip's 300 between them;
    a row group per 50 rows, and clip row 123 holds a NaN, row 777 an infinity."""
    monkeypatch.setattr(W, "ROW_GROUP_BYTES", 1)
    clip = vectors_of(1_000, 0)
    clip[123, 5], clip[777, 0] = np.nan, np.inf
    write_embedding_table(
        tmp_path / "t",
        [
            ("clip", "inat", chunks("a", clip[:600])),
            ("siglip", "inat", chunks("s", vectors_of(300, 1))),
            ("clip", "inat", chunks("b", clip[600:])),
        ],
        output_dtype="float16",
    )
    return tmp_path / "t", clip.astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("threads", [1, 3])
def test_blocks_keep_table_order_and_leave_out_non_finite_rows(table, threads: int) -> None:
    path, clip = table
    assert len(list(selection_row_groups(path, "clip", "inat"))) == 20  # siglip's 6 are skipped
    blocks = list(vector_blocks(path, "clip", "inat", block_rows=32, threads=threads))
    assert max(len(b.ids) for b in blocks) == 32
    ids = [i for b in blocks for i in b.ids.to_pylist()]
    expected = [f"a/{i}" for i in range(600)] + [f"b/{i}" for i in range(400)]
    expected.remove("a/123")
    expected.remove("b/177")
    assert ids == expected
    vectors = np.concatenate([b.vectors for b in blocks])
    assert vectors.dtype == np.float32 and vectors.flags.c_contiguous
    np.testing.assert_array_equal(vectors, np.delete(clip, [123, 777], axis=0))
    left_out = [b.left_out.ids[NOT_FINITE] for b in blocks]
    assert [i for ids in left_out for i in ids] == ["a/123", "b/177"]


def test_closing_early_stops_the_threads(table) -> None:
    path, _ = table
    before = threading.active_count()
    blocks = vector_blocks(path, "clip", "inat", block_rows=10, threads=3, ahead=1)
    first = next(blocks)
    assert len(first.ids) == 10
    assert threading.active_count() == before + 3
    blocks.close()
    assert threading.active_count() == before


def test_a_damaged_part_fails_in_the_caller(table) -> None:
    path, _ = table
    last = table_files(path)[-1]
    last.write_bytes(last.read_bytes()[:-400] + b"\0" * 400)  # the footer and the last pages
    with pytest.raises((OSError, pa.ArrowException)):
        list(vector_blocks(path, "clip", "inat", block_rows=32, threads=2))
