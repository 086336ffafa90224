"""Exact top-k over one (model, dataset) of a table that need not fit in memory.

The selection is streamed in blocks of about ``block_bytes`` of stored
vectors (``store.reader.selection_batches``: record batches of the one file,
or of every part file of a folder table, in table order). Each block is
converted to float32 on its own (a float16 table stays float16 until then),
scored against all queries with one matrix product, cut to its best ``k``
per query, and merged with the best ``k`` kept so far. Memory is one block
(decoding it from Parquet takes about ten times its size), its float32 copy
and the (queries × block) scores, whatever the number of rows: never the
whole matrix.

Ranking rule (deterministic, the same for every block size): higher score
first; equal scores by lower row position, a row's position being its index
in the selection's row order (the order ``load_selection`` reads). That is
``np.argsort(-scores, axis=1, kind="stable")[:, :k]`` over the full
(queries × rows) matrix of the same scores, and the per-block cut and the
merge keep it exactly, ties across block boundaries included.

Rows whose vector is null or not finite are left out before scoring, as every
index leaves them out (``store.vectors``): they have no position, and one
warning names them at the end. ``RunningTopK`` fed such rows directly ranks a
NaN score last, as ``-inf``.

Scores are float32 inner products, block by block. BLAS may sum one dot
product in another order for a matrix of another shape, so a product over
the whole matrix at once can differ from the block's in the last bit; the
ranking above is that of the block scores.

Speed: decoding Parquet's list columns, about 30,000 rows of 768-d float16
a second on one core, costs more than the product (2M rows × 250 queries in
about two minutes on two shared cores, ``benchmarks/exact_topk.py``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from img_search.store import TableLayout, open_table
from img_search.store import schema as S
from img_search.store.reader import selection_batches, selection_filter
from img_search.store.selection import choose_selection
from img_search.store.vectors import LeftOut, usable_rows

#: Stored vectors per block: 16 MiB (10,922 rows of 768-d float16, 5,461 of float32). Decoding
#: a block of list column from Parquet takes about ten times that; the product is efficient
#: from a few thousand rows on.
DEFAULT_BLOCK_BYTES = 16 * 2**20


@dataclass
class TopK:
    """The best ``k`` rows for each query, best first (fewer columns when the selection is smaller)."""

    scores: np.ndarray  # (queries, k) float32
    rows: np.ndarray  # (queries, k) int64: positions in the selection's row order
    ids: np.ndarray | None  # (queries, k) object array of str; None when no ids were given
    scanned: int  # rows searched
    left_out: LeftOut = field(default_factory=LeftOut)  # rows not searched: null or non-finite


class RunningTopK:
    """The best ``k`` rows so far; ``add`` the blocks in row order, then take the ``result``."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        queries = np.asarray(queries)
        if queries.ndim != 2:
            raise ValueError(f"queries must be a (queries, dim) matrix, got shape {queries.shape}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self.scanned = 0
        count = len(queries)
        self.scores = np.empty((count, 0), dtype=np.float32)
        self.rows = np.empty((count, 0), dtype=np.int64)
        self.ids: np.ndarray | None = np.empty((count, 0), dtype=object)
        self._buffer = np.empty((0, self.queries.shape[1]), dtype=np.float32)

    def add(self, vectors: np.ndarray, ids: pa.Array | np.ndarray | None = None) -> None:
        """The next rows (``vectors[i]`` is row ``scanned + i``), with their ids if tracked."""
        count = len(vectors)
        if count == 0:
            return
        if vectors.ndim != 2 or vectors.shape[1] != self.queries.shape[1]:
            raise ValueError(
                f"vectors of shape {vectors.shape} against queries of dimension "
                f"{self.queries.shape[1]}: the queries must come from the table's model"
            )
        scores = self.queries @ self._float32(vectors).T
        np.copyto(scores, -np.inf, where=np.isnan(scores))
        columns = best_columns(scores, self.k)
        new_scores = np.take_along_axis(scores, columns, axis=1)
        merged = np.concatenate([self.scores, new_scores], axis=1)
        # Kept rows precede the block's and each side is in rank order, so a stable sort of
        # the scores alone breaks ties by row position.
        order = np.argsort(-merged, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(merged, order, axis=1)
        rows = np.concatenate([self.rows, columns + self.scanned], axis=1)
        self.rows = np.take_along_axis(rows, order, axis=1)
        if ids is None or self.ids is None:
            self.ids = None
        else:
            taken = ids.take(columns.ravel())
            if isinstance(taken, pa.Array):
                taken = taken.to_numpy(zero_copy_only=False)
            taken = np.asarray(taken, dtype=object).reshape(columns.shape)
            self.ids = np.take_along_axis(np.concatenate([self.ids, taken], axis=1), order, axis=1)
        self.scanned += count

    def result(self) -> TopK:
        return TopK(scores=self.scores, rows=self.rows, ids=self.ids, scanned=self.scanned)

    def _float32(self, vectors: np.ndarray) -> np.ndarray:
        """The block as float32: itself when it is already, else converted into a reused buffer."""
        if vectors.dtype == np.float32:
            return vectors
        if len(self._buffer) < len(vectors):
            self._buffer = np.empty((len(vectors), vectors.shape[1]), dtype=np.float32)
        block = self._buffer[: len(vectors)]
        np.copyto(block, vectors, casting="same_kind")
        return block


def best_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the ``k`` best scores under the ranking rule, in column order.

    ``np.argpartition`` picks arbitrarily among scores tied with the k-th best;
    here every score above it is taken, then the tied ones from the left
    until ``k`` are chosen.
    """
    count, width = scores.shape
    if width <= k:
        return np.broadcast_to(np.arange(width), (count, width)).copy()
    kth = np.partition(scores, width - k, axis=1)[:, width - k, None]
    chosen = scores > kth
    tied = scores == kth
    need = k - chosen.sum(axis=1)
    crowded = np.flatnonzero(tied.sum(axis=1) > need)  # more tied scores than places left
    if len(crowded):
        some = tied[crowded]
        some &= np.cumsum(some, axis=1) <= need[crowded, None]
        tied[crowded] = some
    chosen |= tied
    return np.nonzero(chosen)[1].reshape(count, k)


def exact_top_k(
    path: str | os.PathLike[str],
    queries: np.ndarray,
    k: int,
    model_name: str | None = None,
    dataset_name: str | None = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    max_rows: int | None = None,
    progress: bool = False,
) -> TopK:
    """The ``k`` best rows of a table's (model, dataset) for each query, by inner product.

    ``model_name`` and ``dataset_name`` may be left out when the table holds
    one of each (else the error lists them). ``max_rows`` searches only the
    first rows of the selection (for checks and benchmarks). ``progress``
    shows a rich bar with the rows searched per second.
    """
    from img_search.console import make_progress

    model_name, dataset_name = choose_selection(path, model_name, dataset_name)
    running = RunningTopK(queries, k)
    value_type = (
        pq.read_schema(TableLayout.of(path).metadata_file).field(S.EMBEDDING).type.value_type
    )
    block_rows = max(1, block_bytes // (running.queries.shape[1] * value_type.byte_width))
    limit = max_rows if max_rows is not None else float("inf")
    left_out = LeftOut()
    with make_progress(progress) as bar:
        total = None
        if progress:
            total = open_table(path).count_rows(filter=selection_filter(model_name, dataset_name))
            total = min(total, max_rows) if max_rows is not None else total
        task = bar.add_task(f"exact top-{k} {model_name} × {dataset_name}", total=total, rate="")
        started = time.perf_counter()
        for block in selection_batches(path, model_name, dataset_name, batch_rows=block_rows):
            usable = usable_rows(block.column(S.EMBEDDING), block.column(S.ID))
            left_out.extend(usable.left_out)
            ids = block.column(S.ID)
            if not usable.complete:
                ids = ids.filter(pa.array(usable.keep))
            vectors = usable.vectors[: max(0, int(min(len(ids), limit - running.scanned)))]
            running.add(vectors, ids.slice(0, len(vectors)))
            rate = running.scanned / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=running.scanned, rate=f"{rate:,.0f} rows/s")
            if running.scanned >= limit:
                break
    source = f"{path} ({model_name} × {dataset_name})"
    left_out.refuse_if_all(source, running.scanned + len(left_out))
    left_out.warn(source)
    if running.scanned == 0:
        raise ValueError(
            f"{path} holds no rows for model {model_name!r} and dataset {dataset_name!r}"
        )
    result = running.result()
    result.left_out = left_out
    return result
