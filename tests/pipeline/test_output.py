"""What a launch may do at its output (``state/output.open_output``), decided from the files there:
nothing after the same job, only the new pairs after an added model, a refusal while a different
job lives, and a fresh start where overwrite or ``tasks.resume=false`` discards what was there."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE_PHOTOS, built_once, cli_runner

from img_search.api.jobs import compose
from img_search.data.base import position_shards
from img_search.failures import ConfigError
from img_search.pipeline.modalities import IMAGES, image_dataset_specs
from img_search.pipeline.plan import Job, plan_job
from img_search.pipeline.state.claims import PairClaims
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.output import JobMismatch, open_output
from img_search.pipeline.state.record import CompletionRecord
from img_search.store import read_metadata

PAIR = ("simulated", "image_folder")
#: A second model key of the simulated model (its seed makes other vectors).
OTHER = ["+models.other.model=simulated", "+models.other.seed=1", "+models.other.batch_seconds=0"]


def overrides(out: Path) -> list[str]:
    """The simulated model over the 8 sample photos, written to ``out``."""
    return [
        "models=simulated",
        "models.simulated.batch_seconds=0",
        "datasets=image_folder",
        f"datasets.image_folder.path={SAMPLE_PHOTOS}",
        f"output_path={out}",
        "tasks.num_workers=0",
    ]


def job(out: Path, *extra: str) -> Job:
    cfg = compose("embed_config", [*overrides(out), *extra])
    return plan_job(cfg, IMAGES, image_dataset_specs(cfg))


def ledger_of(out: Path) -> Ledger:
    return Ledger(out.with_name(out.name + ".partial"), lease_s=60)


@pytest.fixture(scope="session")
def finished_table(tmp_path_factory) -> Path:
    """The 8 sample photos embedded by the simulated model, as the command writes them."""

    def build(root: Path) -> str:
        out = root / "table.parquet"
        cli_runner("img_search.pipeline.embed")(*overrides(out))
        return str(out)

    return Path(built_once(tmp_path_factory, "output-finished-table", build))


@pytest.fixture
def finished(finished_table, tmp_path) -> Path:
    """A copy of the finished table of this test's own."""
    out = tmp_path / finished_table.name
    shutil.copy2(finished_table, out)
    return out


def test_the_same_job_as_a_finished_table_is_complete_and_leaves_no_trace(finished):
    before = finished.read_bytes()
    ledger = ledger_of(finished)
    opening = open_output(job(finished), ledger)
    assert opening.complete and opening.todo == [] and opening.pending == []
    assert opening.message == f"output: {finished}\nrows: 8"
    assert finished.read_bytes() == before
    assert not ledger.state_dir.exists()  # the process departed: nothing to resume, nothing held


def test_an_added_model_embeds_only_its_new_pairs_with_the_tables_listing(finished):
    ledger = ledger_of(finished)
    try:
        opening = open_output(job(finished, *OTHER), ledger)
        assert opening.todo == [("other", "image_folder")] == opening.pending
        assert opening.started_here
        recorded = ledger.read_job()
        assert recorded["todo"] == [["other", "image_folder"]]
        assert recorded["pairs"] == [list(PAIR), ["other", "image_folder"]]
        assert recorded["base"] == {"rows": 8, "pairs": [list(PAIR)]}
        # the new pair must see the items the table's pair saw
        metadata = read_metadata(finished)
        assert ledger.agreed("listing-image_folder") == metadata["listings"]["image_folder"]
    finally:
        ledger.leave()


def test_a_different_job_is_refused_while_one_lives_then_by_its_recorded_difference(tmp_path):
    out = tmp_path / "table.parquet"
    first = ledger_of(out)
    second = ledger_of(out)
    try:
        opening = open_output(job(out), first)
        assert opening.todo == [PAIR] and opening.started_here
        with pytest.raises(JobMismatch) as refused:
            open_output(job(out, "models.simulated.seed=5"), second)
        assert str(refused.value) == (
            f"{out} is being written by a different job (host {first.me.host}, pid {os.getpid()}); "
            "wait for it to finish or stop it first"
        )
        assert [m["id"] for m in first.live_members()] == [first.me.id]  # the refused one left
        # the first job's process gone: its recorded job still differs, and says how
        first.depart()
        with pytest.raises(JobMismatch, match=re.escape("models.simulated.seed: 0 then, 5 now")):
            open_output(job(out, "models.simulated.seed=5"), second)
        # the same job resumes it
        resumed = open_output(job(out), second)
        assert resumed.todo == [PAIR] and not resumed.started_here
    finally:
        first.leave()
        second.leave()


def unfinished_with_a_record(out: Path) -> Ledger:
    """A job that committed the first shard of its pair and whose process is gone."""
    ledger = ledger_of(out)
    open_output(job(out), ledger)
    claims = PairClaims(ledger, *PAIR, position_shards(8, 4))
    task = claims.claim_next()
    assert claims.write_record(task, CompletionRecord(*PAIR, 0, 0, 4, done=[[0, 2]]))
    ledger.depart()
    return ledger


def test_resume_false_discards_an_unfinished_job_and_starts_it_again(tmp_path):
    out = tmp_path / "table.parquet"
    before = unfinished_with_a_record(out)
    assert list(before.path("records").rglob("*.json"))
    ledger = ledger_of(out)
    try:
        opening = open_output(job(out, "tasks.resume=false"), ledger)
        assert opening.todo == [PAIR] and opening.started_here
        assert not before.path("records").exists()
        assert ledger.read_job()["base"] is None
    finally:
        ledger.leave()


def test_resume_false_refuses_to_replace_a_finished_table(finished):
    ledger = ledger_of(finished)
    with pytest.raises(
        ConfigError, match=re.escape("exists: pass tasks.overwrite=true to replace it")
    ):
        open_output(job(finished, "tasks.resume=false"), ledger)
    assert read_metadata(finished)["rows"] == 8
    assert not ledger.state_dir.exists()


def test_overwrite_discards_a_finished_table_of_another_job(finished):
    ledger = ledger_of(finished)
    try:
        opening = open_output(
            job(finished, "models.simulated.seed=5", "tasks.overwrite=true"), ledger
        )
        assert opening.todo == [PAIR] and opening.started_here
        assert not finished.exists()
        assert ledger.read_job()["spec"]["models"]["simulated"]["seed"] == 5
    finally:
        ledger.leave()


def test_overwrite_discards_an_unfinished_job_but_is_refused_while_it_lives(tmp_path):
    out = tmp_path / "table.parquet"
    before = unfinished_with_a_record(out)
    ledger = ledger_of(out)
    try:
        opening = open_output(job(out, "tasks.overwrite=true"), ledger)
        assert opening.todo == [PAIR] and opening.started_here
        assert not before.path("records").exists()
        # now this launch's job lives: overwriting it, even with the same job, is refused
        with pytest.raises(JobMismatch, match=r"is being written by another job \(host "):
            open_output(job(out, "tasks.overwrite=true"), ledger_of(out))
        assert ledger.read_job()["todo"] == [list(PAIR)]  # the live job's state is kept
        assert [m["id"] for m in ledger.live_members()] == [ledger.me.id]
    finally:
        ledger.leave()
