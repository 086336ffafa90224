"""Exact top-k over one (model, dataset) of a table that need not fit in memory.

The selection is streamed in blocks of about ``block_bytes`` of stored
vectors (``store.blocks.vector_blocks``: threads decode the row groups of the
one file, or of every part file of a folder table, ahead of the search,
leave out the rows without a usable vector and convert the rest to float32;
the blocks arrive in table order). Each block is scored against all queries
with one matrix product and merged with the best ``k`` kept so far: the
first ``k`` rows by a partition, every later block by comparing its scores
with each query's ``k``-th best and merging the few above it
(``RunningTopK``). Memory is a few blocks in flight per decoding thread, their
float32 copies and the (queries × block) scores, whatever the number of rows:
never the whole matrix.

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

Speed: Parquet decodes the plain vector columns the writer makes at about
0.5-1 GB/s a thread, so on two cores the decoding thread and BLAS share the
machine; ``benchmarks/exact_topk.py`` measures the search against FAISS's
flat add + search on vectors already in memory (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from img_search.host import usable_cores
from img_search.store import TableLayout
from img_search.store import schema as S
from img_search.store.blocks import decode_threads, vector_blocks
from img_search.store.selection import choose_selection, row_count
from img_search.store.vectors import LeftOut, as_float32

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
    """The best ``k`` rows so far; ``add`` the blocks in row order, then take the ``result``.

    Until ``k`` rows are in, each block is cut to its own best ``k``
    (``best_columns``) and merged. After that a block's row can only enter a
    query's top ``k`` with a score above the ``k``-th kept, since a tie loses
    to the earlier row: the block's scores are compared with that floor, and
    only the few above it are merged (a handful per block once the floor has
    risen), instead of partitioning every block.

    ``device``: a torch device (``"cuda"``, or ``"cpu"`` for torch's own
    BLAS) that computes the products instead of numpy; the selection stays on
    the CPU, the same for every device.
    """

    def __init__(self, queries: np.ndarray, k: int, device: str | None = None) -> None:
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
        self._product = BlockProduct(self.queries, device)

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
        if ids is None:
            self.ids = None
        scores = self._product(vectors)
        if self.scores.shape[1] < self.k:
            np.copyto(scores, -np.inf, where=np.isnan(scores))
            columns = best_columns(scores, self.k)
            self._merge(slice(None), np.take_along_axis(scores, columns, axis=1), columns, ids)
        else:
            self._add_above_floor(scores, ids)
        self.scanned += count

    def result(self) -> TopK:
        return TopK(scores=self.scores, rows=self.rows, ids=self.ids, scanned=self.scanned)

    def _add_above_floor(self, scores: np.ndarray, ids: pa.Array | np.ndarray | None) -> None:
        """Merge the scores above each query's ``k``-th best so far (NaN never is)."""
        # (flatnonzero of the raveled mask: a tenth of the time of a 2-d nonzero)
        above = np.flatnonzero(scores > self.scores[:, -1:])
        if not len(above):
            return
        query, column = np.divmod(above, scores.shape[1])  # by query, then column: row order
        hot, within, counts = np.unique(query, return_inverse=True, return_counts=True)
        slot = np.arange(len(query)) - np.repeat(np.cumsum(counts) - counts, counts)
        width = int(counts.max())
        # Padding scores -inf and comes last: it never ranks above the k rows kept.
        new_scores = np.full((len(hot), width), -np.inf, dtype=np.float32)
        new_scores[within, slot] = scores[query, column]
        columns = np.zeros((len(hot), width), dtype=np.int64)
        columns[within, slot] = column
        self._merge(hot, new_scores, columns, ids)

    def _merge(
        self,
        which: slice | np.ndarray,
        new_scores: np.ndarray,
        columns: np.ndarray,
        ids: pa.Array | np.ndarray | None,
    ) -> None:
        """Merge a block's candidates (row order within each query) into the kept rows of ``which``."""
        merged = np.concatenate([self.scores[which], new_scores], axis=1)
        # Kept rows precede the block's and each side is in row order, so a stable sort of
        # the scores alone breaks ties by row position.
        order = np.argsort(-merged, axis=1, kind="stable")[:, : self.k]
        rows = np.concatenate([self.rows[which], columns + self.scanned], axis=1)
        kept_ids = None
        if self.ids is not None and ids is not None:
            taken = ids.take(columns.ravel())
            if isinstance(taken, pa.Array):
                taken = taken.to_numpy(zero_copy_only=False)
            taken = np.asarray(taken, dtype=object).reshape(columns.shape)
            both = np.concatenate([self.ids[which], taken], axis=1)
            kept_ids = np.take_along_axis(both, order, axis=1)
        if isinstance(which, slice):  # every query (the block's own best k)
            self.scores = np.take_along_axis(merged, order, axis=1)
            self.rows = np.take_along_axis(rows, order, axis=1)
            if kept_ids is not None:
                self.ids = kept_ids
            return
        self.scores[which] = np.take_along_axis(merged, order, axis=1)
        self.rows[which] = np.take_along_axis(rows, order, axis=1)
        if kept_ids is not None and self.ids is not None:
            self.ids[which] = kept_ids


class BlockProduct:
    """queries × block scores as a float32 numpy matrix: numpy's BLAS, or torch on ``device``."""

    def __init__(self, queries: np.ndarray, device: str | None) -> None:
        self.queries = queries
        self.device = device
        self._on_device = None
        if device is not None:
            import torch

            self._on_device = torch.from_numpy(queries).to(self.device)
        self._out: dict[int, np.ndarray] = {}  # block size → scores buffer (reused: no page faults)

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        if self._on_device is not None:
            import torch

            block = torch.from_dlpack(np.ascontiguousarray(vectors)).to(self.device)
            return (self._on_device @ block.to(torch.float32).T).cpu().numpy()
        out = self._out.get(len(vectors))
        if out is None:  # blocks come in a few sizes (a row group's last is shorter)
            if len(self._out) >= 4:
                self._out.clear()
            out = self._out[len(vectors)] = np.empty((len(self.queries), len(vectors)), np.float32)
        return np.matmul(self.queries, as_float32(vectors).T, out=out)


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
    threads: int | None = None,
    device: str | None = None,
) -> TopK:
    """The ``k`` best rows of a table's (model, dataset) for each query, by inner product.

    ``model_name`` and ``dataset_name`` may be left out when the table holds
    one of each (else the error lists them). ``max_rows`` searches only the
    first rows of the selection (for checks and benchmarks). ``progress``
    shows a rich bar with the rows searched per second. ``threads``: how many
    threads decode ahead (``store.blocks.decode_threads`` by default);
    ``device``: a torch device for the products (``"cuda"``).
    """
    from img_search.console import make_progress

    model_name, dataset_name = choose_selection(path, model_name, dataset_name)
    running = RunningTopK(queries, k, device=device)
    value_type = (
        pq.read_schema(TableLayout.of(path).metadata_file).field(S.EMBEDDING).type.value_type
    )
    block_rows = max(1, block_bytes // (running.queries.shape[1] * value_type.byte_width))
    limit = max_rows if max_rows is not None else float("inf")
    left_out = LeftOut()
    with make_progress(progress) as bar:
        total = None
        if progress:
            total = row_count(path, model_name, dataset_name)
            total = min(total, max_rows) if max_rows is not None else total
        task = bar.add_task(f"exact top-{k} {model_name} × {dataset_name}", total=total, rate="")
        started = time.perf_counter()
        threads = threads or decode_threads()
        blocks = vector_blocks(path, model_name, dataset_name, block_rows, threads=threads)
        with closing(blocks), blas_threads(usable_cores() - threads):  # closing: stops the threads
            for block in blocks:
                left_out.extend(block.left_out)
                vectors = block.vectors[: max(0, int(min(len(block.ids), limit - running.scanned)))]
                running.add(vectors, block.ids.slice(0, len(vectors)))
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


@contextmanager
def blas_threads(count: int) -> Iterator[None]:
    """BLAS on ``count`` threads (at least one) while the decoding threads use the other cores.

    On 2 cores, BLAS's two threads and the decoding thread took turns: a BLAS
    thread put off waits at each barrier while the other spins, and 500,000
    rows took 2.7 s; one thread each, 2.2 s.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, count), user_api="blas"):
        yield


def matrix_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, block_rows: int = 8_192) -> TopK:
    """The same search over a matrix in memory (the ``flat`` index's): block by block, same ranking."""
    running = RunningTopK(queries, k)
    for start in range(0, len(vectors), block_rows):
        running.add(vectors[start : start + block_rows])
    return running.result()
