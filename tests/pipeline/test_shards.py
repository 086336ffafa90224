"""Shards and claims: every shard is claimed by one process at a time, whoever claims what."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from img_search.data.base import position_shards
from img_search.pipeline.distributed import with_retries
from img_search.pipeline.reader.stream import windows
from img_search.pipeline.state.claims import PairClaims, ShardTask, merge_ranges
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.liveness import here
from img_search.pipeline.state.record import CompletionRecord, PartRef, part_name


def test_position_shards_cover_the_source_once():
    shards = position_shards(41, 8)
    assert [(s.index, s.start, s.stop) for s in shards][-2:] == [(4, 32, 40), (5, 40, 41)]
    assert sum(len(s) for s in shards) == 41
    assert position_shards(0, 8) == []


def test_the_end_of_a_listing_shrinks_to_one_batch():
    shards = position_shards(4000, 48, unit=8)
    sizes = [len(s) for s in shards]
    assert sum(sizes) == 4000
    assert [(s.start, s.stop) for s in shards] == sorted((s.start, s.stop) for s in shards)
    assert all(a.stop == b.start for a, b in itertools.pairwise(shards))
    assert sizes[-24:] == [32] * 8 + [16] * 8 + [8] * 8
    assert [s.tail for s in shards].index(True) == len(shards) - 24
    assert set(sizes[:-25]) == {48}
    # the same listing, shard size and unit give the same shards; no unit, no tail
    assert position_shards(4000, 48, unit=8) == shards
    assert not any(s.tail for s in position_shards(4000, 48))
    # a tail is at most half of the listing
    assert not any(s.tail for s in position_shards(500, 48, unit=8))
    assert not any(s.tail for s in position_shards(4000, 12, unit=8))


def test_ranks_start_apart_and_all_end_on_the_tail():
    from img_search.pipeline.state.claims import claim_order

    shards = position_shards(4000, 48, unit=8)
    body = [s.index for s in shards if not s.tail]
    tail = [s.index for s in shards if s.tail]
    orders = [claim_order(shards, rank, 8) for rank in range(8)]
    assert {order[0] for order in orders} == {r * len(body) // 8 for r in range(8)}
    for order in orders:
        assert sorted(order) == list(range(len(shards)))
        assert order[-len(tail) :] == tail


def test_merge_ranges():
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


def make_ledger(state: Path, lease_s: float = 120.0) -> Ledger:
    ledger = Ledger(state, lease_s)
    ledger.join("spec", "launch", rank=0)
    return ledger


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


def dead_here(host: str) -> str:
    """The process file of a process of this boot and PID namespace that has exited."""
    return json.dumps({"id": "vm-dead", "host": host, "pid": 999999, "started": "1", **here()})


def test_liveness_by_pid_on_this_host_and_by_heartbeat_elsewhere(tmp_path):
    ledger = make_ledger(tmp_path / "state", lease_s=60)
    try:
        processes = ledger.processes_dir
        me = ledger.me
        assert ledger.is_alive(me.id)
        (processes / "vm-dead.json").write_text(dead_here(me.host))
        assert not ledger.is_alive("vm-dead")
        # the same host name and pid in another PID namespace (or recorded without one): its lease
        for other in ({"pid_namespace": 1}, {"boot_id": "another boot"}, {"boot_id": None}):
            member = {**json.loads(dead_here(me.host)), **other, "id": "ns-1"}
            (processes / "ns-1.json").write_text(json.dumps(member))
            assert ledger.is_alive("ns-1") and not ledger.silent("ns-1")
        (processes / "ns-1.json").unlink()
        remote = processes / "far-1.json"
        remote.write_text('{"id": "far-1", "host": "another-machine", "pid": 1}')
        assert ledger.is_alive("far-1")  # fresh heartbeat
        old = ledger.now() - 61
        os.utime(remote, (old, old))
        assert not ledger.is_alive("far-1")  # silent for longer than the lease
        assert [m["id"] for m in ledger.live_members()] == [me.id]
    finally:
        ledger.leave()


def test_the_finaliser_waits_for_live_processes_that_are_not_done(tmp_path):
    """A launch that committed its last shard may still record its statistics: the table waits for it."""
    ledger = make_ledger(tmp_path / "state", lease_s=60)
    try:
        processes = ledger.processes_dir
        (processes / "vm-dead.json").write_text(dead_here(ledger.me.host))
        (processes / "far-1.json").write_text('{"id": "far-1", "host": "elsewhere", "pid": 1}')
        (processes / "far-2.json").write_text(
            '{"id": "far-2", "host": "elsewhere", "pid": 2, "done": true}'
        )
        # not me, not the dead process, not the one that is done: the live one still working
        assert [m["id"] for m in ledger.working_members()] == ["far-1"]
        ledger.update({"done": True})
        (processes / "far-1.json").write_text(
            '{"id": "far-1", "host": "elsewhere", "pid": 1, "done": true}'
        )
        assert ledger.working_members() == []
        # the job state removed by whoever finished the table: this process's last word is dropped
        shutil.rmtree(tmp_path / "state")
        ledger.update({"collectives": 9})
        assert not (tmp_path / "state").exists()
    finally:
        ledger.leave()


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
