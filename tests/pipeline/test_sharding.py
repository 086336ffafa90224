"""Exactly-once sharding: every item reaches exactly one (rank, worker), failures included."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from torch.utils.data import DataLoader

from img_search.pipeline.distributed import with_retries
from img_search.pipeline.sharding import Collator, RankShard


@dataclass(frozen=True)
class Item:
    id: str
    source: int


class ListSource:
    """A stand-in dataset; ``random_access=False`` exercises the streaming path."""

    def __init__(self, n: int, random_access: bool) -> None:
        self.name = "list"
        self.random_access = random_access
        self.items = [Item(f"item-{i}", i) for i in range(n)]

    def length(self) -> int:
        return len(self.items)

    def get(self, position: int) -> Item:
        return self.items[position]

    def __iter__(self):
        return iter(self.items)


def prepare(item: Item) -> int:
    if item.source % 10 == 7:
        raise ValueError(f"bad item {item.id}")
    return item.source * 2


def run_rank(source: ListSource, rank: int, world: int, workers: int, batch_size: int):
    loader = DataLoader(
        RankShard(source, prepare, Collator(list), batch_size, rank, world),
        batch_size=None,
        num_workers=workers,
    )
    ids, failures, features = [], [], []
    for batch in loader:
        assert 0 < len(batch.ids) + len(batch.failures) <= batch_size
        ids.extend(batch.ids)
        failures.extend(batch.failures)
        features.extend(batch.features or [])
        assert len(batch.ids) == len(batch.positions)
    return ids, failures, features


@pytest.mark.parametrize("random_access", [True, False])
@pytest.mark.parametrize(
    ("world", "workers", "batch_size"), [(1, 0, 4), (2, 0, 3), (2, 2, 4), (3, 3, 5)]
)
def test_every_item_once(random_access, world, workers, batch_size):
    source = ListSource(41, random_access)
    seen: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    per_rank = []
    for rank in range(world):
        ids, failures, features = run_rank(source, rank, world, workers, batch_size)
        seen.update(ids)
        failed.update(item_id for item_id, _ in failures)
        per_rank.append(len(ids) + len(failures))
        assert sorted(features) == sorted(int(i.split("-")[1]) * 2 for i in ids)
    bad = {f"item-{i}" for i in range(41) if i % 10 == 7}
    assert set(failed) == bad and max(failed.values()) == 1
    assert set(seen) == {f"item-{i}" for i in range(41)} - bad
    assert max(seen.values()) == 1
    assert max(per_rank) - min(per_rank) <= 1  # balanced shards


def batch_members(source: ListSource, workers: int, skip=frozenset()) -> list[list[str]]:
    shard = RankShard(source, prepare, Collator(list), 4, rank=1, world=2, skip_ids=skip)
    loader = DataLoader(shard, batch_size=None, num_workers=workers)
    number = lambda item_id: int(item_id.split("-")[1])  # noqa: E731
    return [sorted(batch.ids + [i for i, _ in batch.failures], key=number) for batch in loader]


@pytest.mark.parametrize("random_access", [True, False])
def test_batches_do_not_depend_on_worker_count(random_access):
    """Same batches → bit-identical vectors with and without loader workers."""
    source = ListSource(23, random_access)
    expected = [
        ["item-1", "item-3", "item-5", "item-7"],
        ["item-9", "item-11", "item-13", "item-15"],
        ["item-17", "item-19", "item-21"],
    ]
    for workers in (0, 1, 2, 3):
        assert batch_members(source, workers) == expected
    # already-done items only thin their batch out, the others stay where they were
    thinned = batch_members(source, 2, skip=frozenset({"item-9", "item-11", "item-13", "item-15"}))
    assert thinned == [expected[0], expected[2]]


def test_failure_reason_names_the_error():
    _, failures, _ = run_rank(ListSource(10, True), 0, 1, 0, 4)
    assert failures == [("item-7", "ValueError: bad item item-7")]


def test_with_retries_retries_transient_errors_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("hub unreachable")
        return "ok"

    assert with_retries(flaky, "thing", retries=3, backoff=0.0) == "ok"
    assert len(calls) == 3

    def missing():
        calls.append(1)
        raise FileNotFoundError("/nope")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        with_retries(missing, "thing", retries=3, backoff=0.0)
    assert len(calls) == 1

    def always():
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        with_retries(always, "thing", retries=2, backoff=0.0)
