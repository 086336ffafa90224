"""The loader batches of claimed shards: every item reaches exactly one batch, whatever the worker count."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
from collections import Counter
from dataclasses import dataclass

import pytest
from torch.utils.data import DataLoader, get_worker_info

from img_search.data.base import Shard, position_shards
from img_search.pipeline.reader.feeder import Feeder
from img_search.pipeline.reader.stream import Collator, ShardStream, windows
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
    per_task = Counter(b.task for b in batches)
    assert per_task == Counter({k: len(w) for k, w in enumerate(feeder.windows)})
    assert [b.window for b in batches] == [w for ws in feeder.windows for w in ws]


def test_batches_do_not_depend_on_worker_count():
    """Same windows → same batches → bit-identical vectors with and without loader workers."""
    source = ListSource(23)
    shards = position_shards(23, 10)
    expected = None
    for workers in (0, 1, 2, 3):
        batches, _ = run_stream(source, shards, workers, 4)
        members = [(b.task, b.window, b.ids + [i for i, _ in b.failures]) for b in batches]
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
