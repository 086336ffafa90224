"""The job's progress from its completion records: what a read counts, what the main process
shows, and a run logged to a file that says how far it is while it runs."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from conftest import OFFLINE, REPO

from img_search import console
from img_search.atomic import atomic_write_text
from img_search.pipeline import job_progress
from img_search.pipeline.job_progress import JobProgress, PairRecords, committed
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.record import CompletionRecord, PartRef, part_name
from img_search.testing.fixtures import write_photo_folder

#: A progress line of the simulated model over an image folder: done/total, what follows.
LINE = re.compile(r"simulated × image_folder: (\d+)/(\d+) \((\d+)%\)(.*)$")
LINE_OF_M = re.compile(r"m × photos: (\S+ \(\d+%\))(.*)$")


def write_record(
    ledger: Ledger, shard: int, span: tuple[int, int], done: int, errors: int = 0, final=True
) -> Path:
    """A record of (m, photos) that vouches for ``done`` positions of ``span``: rows, then errors."""
    rows = done - errors
    parts = [PartRef(part_name("m", "photos", shard, 0, 0), rows, 1, "0" * 64)] if rows else []
    record = CompletionRecord(
        "m",
        "photos",
        shard,
        *span,
        done=[[span[0], span[0] + done]] if done else [],
        final=final,
        rows=rows,
        parts=parts,
        errors=[[f"bad{i}.jpg", "cannot decode"] for i in range(errors)],
    )
    path = ledger.path("records", "m", "photos", f"{shard:06d}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, record.to_json())
    return path


def test_a_read_counts_each_record_and_reads_a_finished_one_once(tmp_path) -> None:
    ledger = Ledger(tmp_path / "out.parquet.partial")
    records = PairRecords(ledger.path("records", "m", "photos"), "m", "photos")
    assert records.read() == {}  # no folder yet
    write_record(ledger, 0, (0, 4), 4, errors=1)
    open_shard = write_record(ledger, 1, (4, 8), 2, final=False)
    counts = records.read()
    assert {i: (c.positions, c.rows, c.errors, c.final) for i, c in counts.items()} == {
        0: (4, 3, 1, True),
        1: (2, 2, 0, False),
    }
    # a finished shard's record is not read again; an open one is, once it changed
    write_record(ledger, 0, (0, 4), 4, errors=2)
    write_record(ledger, 1, (4, 8), 3, final=False)
    assert (records.read()[0].rows, records.read()[1].positions) == (3, 3)
    assert committed(ledger.state_dir) == (1, 5)  # a fresh read: 1 shard finished; 2 + 3 rows
    open_shard.unlink()  # sent back to be redone
    assert set(records.read()) == {0}
    shutil.rmtree(ledger.state_dir)  # the table is finished: the last counts stay
    assert set(records.read()) == {0}


def test_the_main_process_shows_the_jobs_items_its_own_and_others(
    tmp_path, monkeypatch, caplog
) -> None:
    """A pair appears once someone works on it; this process's open shards count as far as it
    went, others' as far as they committed; a finished table holds every item."""
    monkeypatch.setattr(console.OUTPUT, "progress_every_s", 1e-9)  # a line at every update
    monkeypatch.setattr(job_progress, "BAR_POLL_S", 3600.0)  # the test reads, not the thread
    caplog.set_level(logging.INFO, logger="img_search.progress")
    ledger = Ledger(tmp_path / "out.parquet.partial")
    ledger.agree("listing-photos", {"items": 10, "shards": 3})
    with JobProgress(ledger, [("m", "photos")], enabled=True) as progress:
        progress.poll()  # nobody has committed anything: nothing to show
        write_record(ledger, 0, (0, 4), 4)  # another process commits shard 0
        progress.poll()
        progress.note("m", "photos", 1, 2)  # this process is half-way through shard 1
        progress.poll()
        write_record(ledger, 1, (4, 8), 3, final=False)  # ... which another took over
        progress.poll()
        shutil.rmtree(ledger.state_dir)  # finished by the last of them
        finished = {"model": "m", "dataset": "photos", "rows": 9, "errors": 1}
        progress.end(SimpleNamespace(finished=True, pairs=[finished]))
    shown = [LINE_OF_M.match(r.getMessage()).groups() for r in caplog.records]
    # (a count read again at the end is written again where its rate changed)
    assert list(dict.fromkeys((done, after.split("; ")[-1]) for done, after in shown)) == [
        ("4/10 (40%)", "1/3 shards committed, 0 errors"),
        ("6/10 (60%)", "1/3 shards committed, 0 errors"),
        ("7/10 (70%)", "1/3 shards committed, 0 errors"),
        ("10/10 (100%)", "3/3 shards committed, 1 errors"),
    ]


def test_a_table_finished_before_the_first_read_still_ends_at_its_total(
    tmp_path, monkeypatch, caplog
) -> None:
    """A Ray driver whose actors finished the table (and removed the job state) before it read
    anything: the finished table's listing gives the total."""
    monkeypatch.setattr(job_progress, "BAR_POLL_S", 3600.0)
    caplog.set_level(logging.INFO, logger="img_search.progress")
    ledger = Ledger(tmp_path / "out.parquet.partial")
    with JobProgress(ledger, [("m", "photos")], enabled=True) as progress:
        progress.poll()  # no listing yet, no records
        listings = {"photos": {"items": 10, "shards": 3}}
        pairs = [{"model": "m", "dataset": "photos", "rows": 10, "errors": 0}]
        progress.end(SimpleNamespace(finished=True, pairs=pairs, listings=listings))
    assert [r.getMessage() for r in caplog.records] == [
        "m × photos: 10/10 (100%); 3/3 shards committed, 0 errors"
    ]


def test_an_inert_progress_reads_nothing(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="img_search.progress")
    ledger = Ledger(tmp_path / "out.parquet.partial")
    ledger.agree("listing-photos", {"items": 10, "shards": 3})
    write_record(ledger, 0, (0, 4), 4)
    with JobProgress(ledger, [("m", "photos")], enabled=False) as progress:
        progress.start("m", "photos", 10)
        progress.poll()
        progress.end(SimpleNamespace(finished=True, pairs=[]))
    assert caplog.records == []


def test_a_run_logged_to_a_file_says_how_far_it_is_while_it_runs(tmp_path) -> None:
    """``embed … > run.log 2>&1``: progress lines while it runs, none of them ANSI."""
    folder = tmp_path / "photos"
    write_photo_folder(folder, 24)
    out, log = tmp_path / "photos.parquet", tmp_path / "run.log"
    args = [
        "models=simulated",
        "models.simulated.batch_seconds=0.3",  # 12 batches: about 4 s of simulated device time
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.batch_size=2",
        "tasks.shard_size=4",
        "tasks.num_workers=0",
        "logging.progress_every_s=1",
    ]
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "img_search.pipeline.embed", *args],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    mid_run: list[int] = []
    while run.poll() is None and not mid_run:
        counts = [int(m[1]) for m in map(LINE.search, log.read_text().splitlines()) if m]
        mid_run = [n for n in counts if 0 < n < 24 and run.poll() is None]
        time.sleep(0.1)
    assert run.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert mid_run, text  # read from the file while the run was still going
    lines = [m.groups() for m in map(LINE.search, text.splitlines()) if m]
    assert lines[-1][:3] == ("24", "24", "100")
    assert lines[-1][3].endswith("; 6/6 shards committed, 0 errors")
    assert [int(m[0]) for m in lines] == sorted(int(m[0]) for m in lines)  # never backwards
    assert "items/s" in " ".join(m[3] for m in lines[1:])
    assert "\x1b" not in text and "rows: 24" in text
    assert text.count("img_search embedding summary") == 1
