"""The loader workers' walk of claimed shards: windows, the feeder's claims on demand, the collator.

Every item reaches exactly one batch, in position order, whatever the number
of workers; a stream is read once per shard and worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from torch.utils.data import DataLoader, get_worker_info

from img_search.data.base import Shard, position_shards
from img_search.pipeline.reader.feeder import Feeder
from img_search.pipeline.reader.stream import Collator, Failed, Prepared, ShardStream, windows
from img_search.pipeline.state.claims import ShardTask
from img_search.pipeline.state.record import CompletionRecord


@dataclass(frozen=True)
class Item:
    id: str
    source: int


class ListSource:
    """A stand-in random-access dataset."""

    name = "list"

    def __init__(self, n: int) -> None:
        self.all = [Item(f"item-{i}", i) for i in range(n)]

    def items(self, shard: Shard, start: int, stop: int):
        for position in range(start, stop):
            yield position, self.all[position]


class StreamSource(ListSource):
    """A stream whose shards are read front to back; positions divisible by 5 hold no item."""

    random_access = False

    def __init__(self, n: int, reads: object) -> None:
        super().__init__(n)
        self.reads = reads

    def items(self, shard: Shard, start: int, stop: int):
        info = get_worker_info()  # (a queue: workers are other processes)
        self.reads.put((None if info is None else info.id, shard.index, start, stop))
        for position in range(shard.start, shard.stop):  # from the front, like a file
            if position >= stop:
                return
            if position >= start and position % 5:
                yield position, self.all[position]


def prepare(item: Item) -> int:
    if item.source % 10 == 7:
        raise ValueError(f"bad item {item.id}")
    return item.source * 2


def tasks_of(shards: list[Shard]):
    queue = [ShardTask(shard, 0) for shard in shards]
    return lambda: queue.pop(0) if queue else None


def run_stream(source: ListSource, shards: list[Shard], workers: int, batch_size: int):
    feeder = Feeder(tasks_of(shards), batch_size)
    context = multiprocessing.get_context()
    if workers:
        feeder.serve(workers, context)
    stream = ShardStream(source, feeder, prepare, Collator(list))
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        multiprocessing_context=context if workers else None,
    )
    try:
        return list(loader), feeder
    finally:
        feeder.stop()


@pytest.mark.parametrize(("workers", "batch_size"), [(0, 4), (1, 3), (2, 4), (3, 5)])
def test_every_item_once_in_position_order(workers, batch_size):
    source = ListSource(41)
    batches, feeder = run_stream(source, position_shards(41, 9), workers, batch_size)
    ids = [i for b in batches for i in b.ids]
    failed = [i for b in batches for i, _ in b.failures]
    bad = [f"item-{i}" for i in range(41) if i % 10 == 7]
    assert failed == bad
    assert ids == [f"item-{i}" for i in range(41) if i % 10 != 7]  # in order, each once
    assert all(
        f == int(i.split("-")[1]) * 2
        for b in batches
        for i, f in zip(b.ids, b.features or [], strict=True)
    )
    # the windows of each claimed shard arrive in order and each exactly once
    per_task = Counter(b.claim for b in batches)
    assert per_task == Counter({k: len(w) for k, w in enumerate(feeder.windows)})
    assert [b.window for b in batches] == [w for ws in feeder.windows for w in ws]


def test_batches_do_not_depend_on_worker_count():
    """Same windows → same batches → bit-identical vectors with and without loader workers."""
    source = ListSource(23)
    shards = position_shards(23, 10)
    expected = None
    for workers in (0, 1, 2, 3):
        batches, _ = run_stream(source, shards, workers, 4)
        members = [(b.claim, b.window, b.ids + [i for i, _ in b.failures]) for b in batches]
        expected = expected or members
        assert members == expected
    assert [w for _, w, _ in expected] == [
        (0, 4),
        (4, 8),
        (8, 10),
        (10, 14),
        (14, 18),
        (18, 20),
        (20, 23),
    ]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_is_read_once_per_shard_and_worker(workers):
    reads = multiprocessing.get_context().Queue()
    source = StreamSource(30, reads)
    batches, feeder = run_stream(source, position_shards(30, 12), workers, 4)
    expected = [f"item-{i}" for i in range(30) if i % 5 and i % 10 != 7]
    assert [i for b in batches for i in b.ids] == expected
    assert [b.window for b in batches] == [w for ws in feeder.windows for w in ws]
    calls = []
    with contextlib.suppress(queue.Empty):
        while True:
            calls.append(reads.get(timeout=1))
    # each worker reads each shard once (a worker with no window of a shard does not read it)
    assert len(calls) == len({(w, shard) for w, shard, _, _ in calls}) <= 3 * max(1, workers)
    assert {shard for _, shard, _, _ in calls} == {0, 1, 2}


def test_windows_skip_what_is_done():
    shard = Shard(3, 100, 120)
    assert windows(ShardTask(shard, 0), 8) == [(100, 108), (108, 116), (116, 120)]
    resumed = ShardTask(
        shard, 1, CompletionRecord("m", "d", 3, 100, 120, done=[[100, 108], [116, 118]])
    )
    assert windows(resumed, 8) == [(108, 116), (118, 120)]
    finished = ShardTask(shard, 1, CompletionRecord("m", "d", 3, 100, 120, done=[[100, 120]]))
    assert windows(finished, 8) == [(120, 120)]  # one empty window: its completion is committed


def test_the_feeder_claims_only_when_a_shard_is_first_asked_for():
    claimed = []
    shards = position_shards(10, 4)

    def claim():
        if len(claimed) == len(shards):
            return None
        claimed.append(ShardTask(shards[len(claimed)], 0))
        return claimed[-1]

    feeder = Feeder(claim, batch_size=3)
    task, task_windows = feeder.task(1)
    assert (task.shard.index, len(claimed)) == (1, 2)  # shards 0 and 1, nothing further
    assert task_windows == [(4, 7), (7, 8)]
    assert feeder.task(0)[0] is claimed[0] and len(claimed) == 2  # asked again: no new claim
    assert feeder.task(5) is None and feeder.exhausted
    assert [t.shard.index for t in feeder.tasks] == [0, 1, 2]
    assert feeder.windows[2] == [(8, 10)]


def _ask_and_die(feeder: Feeder) -> None:
    """A loader worker killed between its request and the answer (an OOM kill, a crash)."""
    feeder._theirs[0].send(0)
    os.kill(os.getpid(), signal.SIGKILL)


def _ask(feeder: Feeder, worker: int, k: int, answers: Any) -> None:
    task, task_windows = feeder.ask(worker, k)
    answers.put((worker, task.shard.index, task_windows))


def test_a_worker_that_dies_mid_request_leaves_the_other_workers_answered():
    """Each worker asks through a pipe of its own: a worker that ends at any moment holds nothing
    another needs (a queue shared by the workers has one write lock, which a worker that ended
    at the wrong moment kept for good, and the others waited forever)."""
    shards = position_shards(40, 4)
    tasks = iter(ShardTask(s, 0) for s in shards)
    feeder = Feeder(lambda: next(tasks, None), batch_size=3)
    context = multiprocessing.get_context("fork")
    feeder.serve(3, context)
    try:
        dead = context.Process(target=_ask_and_die, args=(feeder,))
        dead.start()
        dead.join(10)
        assert dead.exitcode == -signal.SIGKILL
        answers = context.Queue()
        alive = [context.Process(target=_ask, args=(feeder, w, w + 1, answers)) for w in (1, 2)]
        for process in alive:
            process.start()
        got = sorted(answers.get(timeout=20) for _ in alive)
        for process in alive:
            process.join(10)
    finally:
        feeder.stop()
    # shard 0 was claimed for the dead worker; the others got the shards they asked for, their
    # windows cut in the worker as the main process cut them
    assert got == [(1, 2, [(8, 11), (11, 12)]), (2, 3, [(12, 15), (15, 16)])]
    assert [t.shard.index for t in feeder.tasks] == [0, 1, 2, 3]
    assert feeder.windows[2:] == [[(8, 11), (11, 12)], [(12, 15), (15, 16)]]


def test_the_collator_splits_failures_off_and_keeps_positions():
    records = [Prepared(4, "a", 1), Failed(5, "b", "bad"), Prepared(6, "c", 3)]
    batch = Collator(lambda features: [f * 10 for f in features])(records)
    assert (batch.ids, batch.positions, batch.features) == (["a", "c"], [4, 6], [10, 30])
    assert batch.failures == [("b", "bad")]
    only_failures = Collator(list)([Failed(7, "d", "unreadable")])
    assert only_failures.features is None and only_failures.ids == []
