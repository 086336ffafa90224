"""Claims: a shard is embedded by one live process at a time, and a dead owner's shard is taken over
with what it committed; the order in which ranks claim; the done ranges of a record."""

from __future__ import annotations

import subprocess
import sys

from ledger_fixtures import make_ledger

from img_search.data.base import position_shards
from img_search.pipeline.reader.stream import windows
from img_search.pipeline.state.claims import PairClaims, ShardTask, claim_order, merge_ranges
from img_search.pipeline.state.record import CompletionRecord, PartRef, part_name


def test_claim_order_starts_ranks_apart_and_ends_all_on_the_tail():
    shards = position_shards(4000, 48, unit=8)
    body = [s.index for s in shards if not s.tail]
    tail = [s.index for s in shards if s.tail]
    orders = [claim_order(shards, rank, 8) for rank in range(8)]
    assert {order[0] for order in orders} == {r * len(body) // 8 for r in range(8)}
    for order in orders:
        assert sorted(order) == list(range(len(shards)))
        assert order[-len(tail) :] == tail


def test_merge_ranges_joins_touching_ranges_and_drops_empty_ones():
    assert merge_ranges([[5, 8], [0, 3], [3, 5], [10, 10], [9, 12]]) == [[0, 8], [9, 12]]


def finished_record(task: ShardTask, rows: int) -> CompletionRecord:
    """A final record of ``task``'s whole shard: ``rows`` rows in one part, the others failed."""
    shard = task.shard
    errors = [[f"item-{i}", "unreadable"] for i in range(len(shard) - rows)]
    part = PartRef(part_name("clip", "photos", shard.index, task.generation, 0), rows, 1, "ab")
    return CompletionRecord(
        "clip",
        "photos",
        shard.index,
        shard.start,
        shard.stop,
        done=[[shard.start, shard.stop]],
        final=True,
        rows=rows,
        parts=[part],
        errors=errors,
    )


def test_claims_are_exclusive_and_records_end_them(tmp_path):
    ledger = make_ledger(tmp_path / "state")
    try:
        shards = position_shards(30, 10)
        first = PairClaims(ledger, "clip", "photos", shards)
        second = PairClaims(ledger, "clip", "photos", shards, rank=1, ranks=2)
        a = first.claim_next()
        b = second.claim_next()
        assert (a.shard.index, b.shard.index) == (0, 1)
        # the same live process holds shard 0 already: the other claimant cannot take it
        assert second.claim_next().shard.index == 2
        assert second.claim_next() is None
        assert first.write_record(a, finished_record(a, rows=10))
        assert first.unfinished() == [1, 2]
        assert first.committed_rows() == 10
    finally:
        ledger.leave()


def test_a_dead_owners_shard_is_taken_over_with_its_progress(tmp_path):
    state = tmp_path / "state"
    shards = position_shards(20, 10)
    # a process that claims shard 0, commits half of it, and is killed
    script = (
        "import os, signal, sys\n"
        "from img_search.data.base import position_shards\n"
        "from img_search.pipeline.state.claims import PairClaims\n"
        "from img_search.pipeline.state.ledger import Ledger\n"
        f"ledger = Ledger({str(state)!r}); ledger.join('spec', 'other', 0)\n"
        "claims = PairClaims(ledger, 'clip', 'photos', position_shards(20, 10))\n"
        "task = claims.claim_next()\n"
        "from img_search.pipeline.state.record import CompletionRecord, PartRef\n"
        "part = PartRef('part-clip-photos-000000-00-000.parquet', 5, 100, 'ab')\n"
        "claims.write_record(task, CompletionRecord('clip', 'photos', 0, 0, 10, done=[[0, 5]], "
        "rows=5, parts=[part]))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    ledger = make_ledger(state)
    try:
        claims = PairClaims(ledger, "clip", "photos", shards)
        task = claims.claim_next()
        assert task.shard.index == 0 and task.generation == 1  # the next generation of the claim
        assert task.done == [[0, 5]]
        assert [p.name for p in task.record.parts] == ["part-clip-photos-000000-00-000.parquet"]
        assert windows(task, 4) == [(5, 8), (8, 10)]
        assert claims.still_mine(task)
        assert ledger.holder("clip/photos/000000") == ledger.me.id
    finally:
        ledger.leave()


def test_a_live_process_keeps_its_shard_and_a_lost_claim_cannot_commit(tmp_path):
    ledger = make_ledger(tmp_path / "state")
    try:
        claims = PairClaims(ledger, "clip", "photos", position_shards(10, 10))
        task = claims.claim_next()
        # another process took the shard over (as after a lease expiry): the old owner's commit is refused
        (claims.ledger.path("claims", "clip", "photos", "000000.1")).write_text('{"owner": "x"}')
        assert not claims.still_mine(task)
        assert not claims.write_record(task, finished_record(task, rows=0))
        assert claims.record(0) is None
    finally:
        ledger.leave()
