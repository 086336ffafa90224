"""The writer of a pass: parts and completion records of the shards a process holds, committed in order."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from img_search.data.base import position_shards
from img_search.pipeline import writer as writer_module
from img_search.pipeline.reader.stream import Batch
from img_search.pipeline.state.claims import PairClaims, ShardTask
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.writer import ShardWriter
from img_search.store import PartWriter

MODEL, DATASET, DIM = "sim", "photos", 4


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(tmp_path / "state", 120.0)
    ledger.join("spec", "launch", rank=0)
    yield ledger
    ledger.leave()


def claims_of(ledger: Ledger, items: int, shard_size: int) -> PairClaims:
    return PairClaims(ledger, MODEL, DATASET, position_shards(items, shard_size))


def shard_writer(claims: PairClaims, parts: Path, **options) -> ShardWriter:
    def make(name: str) -> PartWriter:
        parts.mkdir(parents=True, exist_ok=True)
        return PartWriter(parts / name, MODEL, DATASET)

    return ShardWriter(claims, make, options.pop("commit_every_s", 3600.0), **options)


def batch_of(
    claim: int,
    task: ShardTask,
    window: tuple[int, int],
    windows_in_shard: int,
    failed: tuple[int, ...] = (),
) -> tuple[Batch, np.ndarray]:
    """The batch a reader hands over for ``window``: its items, but those at ``failed`` positions."""
    positions = [p for p in range(*window) if p not in failed]
    batch = Batch(
        claim=claim,
        window=window,
        ids=[f"item-{p}" for p in positions],
        positions=positions,
        failures=[(f"item-{p}", "unreadable") for p in failed],
        task=task,
        windows_in_shard=windows_in_shard,
    )
    vectors = np.arange(len(positions) * DIM, dtype=np.float32).reshape(-1, DIM)
    return batch, vectors


class Clock:
    """``time`` for the writer's module: monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


def test_the_final_window_commits_the_record_with_its_parts_rows_and_sha256(ledger, tmp_path):
    claims = claims_of(ledger, 8, 8)
    task = claims.claim_next()
    writer = shard_writer(claims, tmp_path / "parts")
    first, vectors = batch_of(0, task, (0, 4), 2, failed=(2,))
    assert writer.add(first, vectors, None) == 4  # positions done so far, not yet committed
    assert claims.record(0) is None
    last, vectors = batch_of(0, task, (4, 8), 2)
    assert writer.add(last, vectors, None) == 8

    record = claims.record(0)
    assert record.final and record.done == [[0, 8]] and record.owner == ledger.me.id
    assert record.rows == 7 and record.errors == [["item-2", "unreadable"]]
    [part] = record.parts
    path = tmp_path / "parts" / part.name
    assert part.rows == 7 and part.size == path.stat().st_size
    assert part.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert pq.read_table(path).column("id").to_pylist() == [
        f"item-{p}" for p in (0, 1, 3, 4, 5, 6, 7)
    ]
    assert (writer.stats.shards, writer.stats.commits, writer.stats.rows) == ([0], 1, 7)
    assert writer.stats.errors == 1 and writer.open == {}


def test_a_progress_commit_comes_after_commit_every_s_and_the_final_one_adds_a_part(
    ledger, tmp_path, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(writer_module, "time", clock)
    claims = claims_of(ledger, 15, 15)
    task = claims.claim_next()
    writer = shard_writer(claims, tmp_path / "parts", commit_every_s=60.0)
    windows = [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15)]

    def add(window: tuple[int, int], seconds_later: float) -> None:
        clock.now += seconds_later
        writer.add(*batch_of(0, task, window, len(windows)), None)

    add(windows[0], 0.0)
    add(windows[1], 59.0)
    assert claims.record(0) is None  # 59 s since the writer started: no commit yet
    add(windows[2], 1.0)
    progress = claims.record(0)
    assert not progress.final and progress.done == [[0, 9]] and progress.rows == 9
    assert [p.rows for p in progress.parts] == [9]
    add(windows[3], 1.0)  # 1 s since that commit
    assert claims.record(0) == progress
    add(windows[4], 0.0)
    final = claims.record(0)
    assert final.final and final.done == [[0, 15]] and final.rows == 15
    assert [p.rows for p in final.parts] == [9, 6]
    assert (writer.stats.commits, writer.stats.shards) == (2, [0])


def test_a_lost_claim_drops_this_copy_of_the_shard(ledger, tmp_path):
    claims = claims_of(ledger, 8, 8)
    task = claims.claim_next()
    writer = shard_writer(claims, tmp_path / "parts")
    writer.add(*batch_of(0, task, (0, 4), 2), None)
    # another process took the shard over (as after a lease expiry): this copy may not commit
    ledger.path("claims", MODEL, DATASET, "000000.1").write_text('{"owner": "x"}')
    assert writer.add(*batch_of(0, task, (4, 8), 2), None) == 8
    assert claims.record(0) is None
    assert writer.stats.lost == [0] and writer.stats.shards == [] and writer.stats.commits == 0
    assert writer.open == {}


def test_build_problems_are_recorded_with_shard_0_only(ledger, tmp_path):
    claims = claims_of(ledger, 8, 4)
    problems = [("photo-x", "not an image"), ("photo-y", "unreadable")]
    writer = shard_writer(claims, tmp_path / "parts", problems=problems)
    first, second = claims.claim_next(), claims.claim_next()
    assert (first.shard.index, second.shard.index) == (0, 1)
    writer.add(*batch_of(1, second, (4, 8), 1), None)
    writer.add(*batch_of(0, first, (0, 4), 1, failed=(3,)), None)
    zero, one = claims.record(0), claims.record(1)
    assert zero.problems == 2 and zero.rows == 3
    assert zero.errors == [
        ["photo-x", "not an image"],
        ["photo-y", "unreadable"],
        ["item-3", "unreadable"],
    ]
    assert one.problems == 0 and one.errors == [] and one.rows == 4
    assert writer.stats.shards == [1, 0] and writer.stats.errors == 3
