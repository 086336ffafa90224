"""Claimed shards → prepared batches, inside DataLoader workers.

The process's main thread claims shards (``Feeder``, on demand) and every
loader worker walks the same sequence of claimed shards. A shard is cut into
*windows* of ``batch_size`` positions counted from its start; window ``j``
(counted over every shard this process took) is prepared by worker
``j % workers``, and the DataLoader's in-order round robin hands the windows
to the model in order. So:

- every worker is busy on every shard, small or large;
- a batch is the same whatever the number of workers (and so are the
  vectors, to the bit);
- rows reach the writer in position order, shard by shard.

Decoding and the encoder's preprocessing run in the workers; a failing item
becomes a ``Failed`` record instead of an exception, so it reaches the errors
table and the run goes on.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from img_search.faults import fail_point
from img_search.pipeline.state.claims import ShardTask, merge_ranges

if TYPE_CHECKING:  # the feeder cuts windows with this module's ``windows``
    from img_search.pipeline.reader.feeder import Feeder


@dataclass
class Prepared:
    position: int
    id: str
    features: Any


@dataclass
class Failed:
    position: int
    id: str
    reason: str


@dataclass
class Batch:
    """The prepared items of one window of one claimed shard, and the items that failed.

    A loader worker names the shard by ``claim`` alone, so that what it
    pickles stays small; the reader attaches ``task`` and ``windows_in_shard``
    in the main process (``reader.loader.Reader``), where the claims are.
    """

    claim: int = 0  # which of this process's claimed shards (the k-th it claimed in this pass)
    window: tuple[int, int] = (0, 0)  # positions covered, failed and skipped ones included
    ids: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    features: Any = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    task: ShardTask | None = None  # the claimed shard (main process)
    windows_in_shard: int = 0  # how many windows of it this process embeds (main process)

    def pin_memory(self) -> Batch:
        self.features = _pin(self.features)
        return self


def _pin(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.pin_memory()
    if isinstance(value, dict):
        return {k: _pin(v) for k, v in value.items()}
    return value


def windows(task: ShardTask, batch_size: int) -> list[tuple[int, int]]:
    """The position windows of a shard still to embed: batch-sized from its start, minus what is done.

    A shard with nothing left still has one empty window, so that its
    completion is committed like any other.
    """
    shard, done = task.shard, merge_ranges(task.done)
    result = []
    for start in range(shard.start, shard.stop, batch_size):
        stop = min(start + batch_size, shard.stop)
        for gap in _gaps(start, stop, done):
            result.append(gap)
    return result or [(shard.stop, shard.stop)]


def _gaps(start: int, stop: int, done: list[list[int]]) -> Iterator[tuple[int, int]]:
    cursor = start
    for a, b in done:
        if b <= cursor or a >= stop:
            continue
        if a > cursor:
            yield cursor, a
        cursor = max(cursor, b)
    if cursor < stop:
        yield cursor, stop


class ShardStream(IterableDataset):
    """Batches of every shard the feeder hands out, each made by the worker that owns its window.

    Use with ``DataLoader(stream, batch_size=None)``: batching happens here.
    """

    def __init__(
        self,
        source: Any,
        feeder: Feeder,
        prepare: Callable[[Any], Any],
        collate: Callable[[list[Prepared | Failed]], Batch],
        start: int = 0,
        only: set[int] | None = None,
    ) -> None:
        super().__init__()
        self.source, self.feeder, self.prepare, self.collate = source, feeder, prepare, collate
        #: Windows (counted over every claimed shard) before ``start`` were delivered already;
        #: ``only``: just these windows (of shards claimed already), to isolate a failure.
        self.start, self.only = start, only

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        served = None if info is None else worker
        first_window, k = 0, 0
        last = None if self.only is None else max(self.only)
        while (last is None or first_window <= last) and (
            answer := self.feeder.ask(served, k)
        ) is not None:
            task, task_windows = answer
            mine = [
                j for j in range(len(task_windows)) if self._owns(first_window + j, workers, worker)
            ]
            if mine:
                yield from self._task_batches(k, task, task_windows, mine)
            first_window += len(task_windows)
            k += 1

    def _owns(self, window: int, workers: int, worker: int) -> bool:
        if window < self.start or (self.only is not None and window not in self.only):
            return False
        return (window - self.start) % workers == worker

    def _task_batches(
        self, k: int, task: ShardTask, task_windows: list[tuple[int, int]], mine: list[int]
    ) -> Iterator[Batch]:
        if getattr(self.source, "random_access", True):  # read only this worker's windows
            for j in mine:
                items = self.source.items(task.shard, *task_windows[j])
                yield self._batch(k, task_windows[j], [self._prepare(p, i) for p, i in items])
            return
        # a stream is read once per shard; the other workers' items are skipped undecoded
        wanted, records, j = set(mine), [], 0
        items = self.source.items(task.shard, task_windows[0][0], task_windows[-1][1])
        for position, item in items:
            while j < len(task_windows) and position >= task_windows[j][1]:
                if j in wanted:
                    yield self._batch(k, task_windows[j], records)
                records, j = [], j + 1
            if j == len(task_windows):
                break
            if j in wanted and position >= task_windows[j][0]:
                records.append(self._prepare(position, item))
        for rest in range(j, len(task_windows)):
            if rest in wanted:
                yield self._batch(k, task_windows[rest], records)
            records = []

    def _batch(self, k: int, window: tuple[int, int], records: list[Prepared | Failed]) -> Batch:
        batch = self.collate(records)
        batch.claim, batch.window = k, window
        return batch

    def _prepare(self, position: int, item: Any) -> Prepared | Failed:
        fail_point(f"prepare/{item.id}")
        try:
            return Prepared(position, item.id, self.prepare(item))
        except Exception as exc:
            return Failed(position, item.id, f"{type(exc).__name__}: {exc}")


def start_loader_worker(worker_id: int, idle: bool) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C is for the main process to handle (it says what is
    kept and stops the workers), not for each worker to print its traceback; on a CPU,
    ``yield_to_the_model`` too (``idle``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if idle:
        yield_to_the_model(worker_id)


def yield_to_the_model(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` for CPU runs: loader workers only take idle CPU time.

    On a CPU the model's threads and the decoders share the cores; a decoder
    preempting one of the model's threads stalls all of them at the next
    barrier, which costs twice the decoding time. Under ``SCHED_IDLE`` the
    workers run in the gaps between the model's parallel regions, and when
    they fall behind the main process blocks on the queue, which gives them
    the cores back.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not permitted: be nice instead
        with contextlib.suppress(OSError):
            os.nice(19)


class Collator:
    """Picklable collate_fn: splits failures off, collates the rest with the encoder's own collate."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, records: Sequence[Prepared | Failed]) -> Batch:
        batch = Batch()
        good = []
        for record in records:
            if isinstance(record, Failed):
                batch.failures.append((record.id, record.reason))
            else:
                batch.ids.append(record.id)
                batch.positions.append(record.position)
                good.append(record.features)
        if good:
            batch.features = self.collate(good)
        return batch
