"""A selection's vectors as float32 blocks, decoded ahead on threads while the caller uses the last one.

Exact search over a table larger than memory is a loop of two steps: decode
the next block from Parquet, then score it. Decoding (Arrow, which releases
the GIL) and scoring (BLAS) use different cores, so here decoding runs on
``threads`` threads ahead of the caller: each takes the next row group of
the selection (``store.reader.selection_row_groups``), decodes it block by
block, leaves out the rows that have no usable vector (``store.vectors``, the
one policy), converts the rest to float32 and queues them; the caller gets
the blocks in table order. Memory: at most ``ahead`` blocks queued per
thread, plus the one the caller holds, whatever the size of a row group.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from img_search.host import usable_cores
from img_search.store import schema as S
from img_search.store.reader import RowGroupRead, selection_row_groups
from img_search.store.vectors import LeftOut, usable_rows

_DONE = object()


@dataclass
class Block:
    """Consecutive usable rows of a selection: ``ids[i]`` is the item of ``vectors[i]``."""

    ids: pa.Array
    vectors: np.ndarray  # (rows, dim) float32, C-contiguous
    left_out: LeftOut  # the rows of this stretch of the table that are not in it


@dataclass
class _Failed:
    error: BaseException


def decode_threads() -> int:
    """Half the cores this process may use (the other half scores), at least one, at most 8."""
    return max(1, min(8, usable_cores() // 2))


def vector_blocks(
    path: str | os.PathLike[str],
    model_name: str | None,
    dataset_name: str | None,
    block_rows: int,
    *,
    threads: int | None = None,
    ahead: int = 2,
) -> Iterator[Block]:
    """The selection's usable rows in table order, ``block_rows`` rows of the table at a time."""
    groups = list(selection_row_groups(path, model_name, dataset_name))
    queues: list[queue.Queue] = [queue.Queue(maxsize=ahead) for _ in groups]
    claimed = iter(range(len(groups)))
    claim = threading.Lock()
    stop = threading.Event()

    def put(number: int, item: object) -> bool:
        while not stop.is_set():
            try:
                queues[number].put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        while not stop.is_set():
            with claim:
                number = next(claimed, None)
            if number is None:
                return
            try:
                for block in _decoded(groups[number], block_rows):
                    if not put(number, block):
                        return
                put(number, _DONE)
            except BaseException as error:  # handed to the caller, raised there
                put(number, _Failed(error))
                return

    workers = [
        threading.Thread(target=work, name=f"decode-{n}", daemon=True)
        for n in range(min(threads or decode_threads(), len(groups)))
    ]
    for worker in workers:
        worker.start()
    try:
        for waiting in queues:
            while (item := waiting.get()) is not _DONE:
                if isinstance(item, _Failed):
                    raise item.error
                yield item
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def _decoded(group: RowGroupRead, block_rows: int) -> Iterator[Block]:
    for batch in group.batches(block_rows):
        ids = batch.column(S.ID)
        usable = usable_rows(batch.column(S.EMBEDDING), ids, float32=True)
        if not usable.complete:
            ids = ids.filter(pa.array(usable.keep))
        yield Block(ids=ids, vectors=usable.vectors, left_out=usable.left_out)
