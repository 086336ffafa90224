"""Finishing the table: not while a live process of the job is still working."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.liveness import here


def make_ledger(state: Path, lease_s: float = 120.0) -> Ledger:
    ledger = Ledger(state, lease_s)
    ledger.join("spec", "launch", rank=0)
    return ledger


def dead_here(host: str) -> str:
    """The process file of a process of this boot and PID namespace that has exited."""
    return json.dumps({"id": "vm-dead", "host": host, "pid": 999999, "started": "1", **here()})


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
