"""Finishing the table: not while a live process of the job is still working, and a shard whose
part fails its check is sent back to be redone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import SAMPLE_PHOTOS
from ledger_fixtures import dead_here, make_ledger

from img_search.api.jobs import compose
from img_search.data.base import position_shards
from img_search.pipeline.modalities import IMAGES, image_dataset_specs
from img_search.pipeline.plan import Job, plan_job
from img_search.pipeline.state.claims import PairClaims
from img_search.pipeline.state.finalize import finalize
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.output import open_output
from img_search.pipeline.state.record import CompletionRecord, PartRef, part_name

PAIR = ("simulated", "image_folder")


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


def job(out: Path) -> Job:
    """The simulated model over the 8 sample photos, written to ``out``."""
    cfg = compose(
        "embed_config",
        [
            "models=simulated",
            "datasets=image_folder",
            f"datasets.image_folder.path={SAMPLE_PHOTOS}",
            f"output_path={out}",
        ],
    )
    return plan_job(cfg, IMAGES, image_dataset_specs(cfg))


def final_record(shard: int, start: int, stop: int, generation: int) -> CompletionRecord:
    """The final record of a shard whose rows are in one part that was never written."""
    part = PartRef(part_name(*PAIR, shard, generation, 0), stop - start, 100, "ab")
    return CompletionRecord(
        *PAIR, shard, start, stop, done=[[start, stop]], final=True, rows=stop - start, parts=[part]
    )


def test_finalize_waits_for_a_holder_then_a_worker_then_sends_a_missing_part_back(tmp_path):
    out = tmp_path / "table.parquet"
    ledger = Ledger(out.with_name("table.parquet.partial"), lease_s=60)
    planned = job(out)
    try:
        open_output(planned, ledger)
        ledger.agree("listing-image_folder", {"items": 8, "shards": 2})
        claims = PairClaims(ledger, *PAIR, position_shards(8, 4))
        task = claims.claim_next()
        assert claims.write_record(task, final_record(0, 0, 4, task.generation))
        # shard 1 held by a live process on another machine
        far = {"id": "far-1", "host": "elsewhere", "pid": 1}
        (ledger.processes_dir / "far-1.json").write_text(json.dumps(far))
        ledger.path("claims", *PAIR, "000001.0").write_text('{"owner": "far-1"}')
        waiting = finalize(planned, ledger)
        assert not waiting.finished and waiting.redo == []
        assert waiting.waiting.startswith(
            "1 shard(s) of simulated × image_folder are still held by other processes "
            "(array tasks / launches: host elsewhere, pid 1); "
        )
        # far-1 commits shard 1, but has not said it is done
        claims.record_path(1).write_text(final_record(1, 4, 8, 0).to_json())  # as far-1 would
        assert claims.unfinished() == []
        working = finalize(planned, ledger)
        assert not working.finished and working.redo == []
        assert working.waiting.startswith(
            "every shard is committed, and 1 other process(es) are finishing (host elsewhere, pid 1)"
        )
        # far-1 done: the table is assembled only from parts that hold what their records vouch
        (ledger.processes_dir / "far-1.json").write_text(json.dumps({**far, "done": True}))
        redone = finalize(planned, ledger)
        assert not redone.finished and redone.redo == [PAIR]
        assert claims.unfinished() == [0, 1]  # their records gone, their claims released
        assert redone.waiting == (
            "shards of simulated × image_folder are to be redone (a part failed its check): "
            "rerun this same command"
        )
        again = PairClaims(ledger, *PAIR, position_shards(8, 4)).claim_next()
        assert (again.shard.index, again.done) == (0, [])  # from the start, in a later claim
        assert again.generation > task.generation
        assert not out.exists()
    finally:
        ledger.leave()
