"""Ctrl-C during embed: one line naming what is kept, exit 130, no traceback; a rerun resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from conftest import OFFLINE, REPO

from img_search.pipeline.interrupt import interrupted_line
from img_search.store import read_embeddings
from img_search.testing.fixtures import write_photo_folder

KEPT = re.compile(
    r"interrupted: (\d+) shards? committed, ([\d,]+) rows kept; rerun the same command to resume$"
)


@pytest.mark.slow  # about 20 s: a fresh interpreter, a loader worker, and the rerun
def test_ctrl_c_says_what_is_kept_exits_130_and_a_rerun_resumes(tmp_path, run_embed) -> None:
    """SIGINT to the run's process group, as Ctrl-C on a terminal sends it (a loader worker too)."""
    folder = tmp_path / "photos"
    ids = write_photo_folder(folder, 24)
    out, log = tmp_path / "photos.parquet", tmp_path / "run.log"
    args = [
        "models=simulated",
        "models.simulated.batch_seconds=0.3",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.batch_size=2",
        "tasks.shard_size=4",
        "tasks.num_workers=1",
    ]
    records = out.with_name(out.name + ".partial") / "records" / "simulated" / "image_folder"
    with open(log, "w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "img_search.pipeline.embed", *args],
            cwd=REPO,
            env={**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a shell's foreground job
        )
    while run.poll() is None and len(list(records.glob("*.json"))) < 2:
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(timeout=120) == 130, log.read_text()[-3000:]
    text = log.read_text()
    kept = [json.loads(p.read_text()) for p in records.glob("*.json")]
    said = [m for m in map(KEPT.search, text.splitlines()) if m]
    assert len(said) == 1 and "interrupted" not in text.replace(said[0][0], ""), text
    shards, rows = int(said[0][1]), int(said[0][2].replace(",", ""))
    assert (shards, rows) == (sum(r["final"] for r in kept), sum(r["rows"] for r in kept))
    assert 0 < rows < 24
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text

    rerun = run_embed(*args)
    assert f"resumed: {rows} rows were already done" in rerun.stdout
    assert "rows: 24" in rerun.stdout
    assert sorted(read_embeddings(out).ids) == sorted(ids)


def test_interrupted_before_anything_was_committed(tmp_path) -> None:
    cfg = {"output_path": str(tmp_path / "t.parquet")}
    assert interrupted_line(cfg) == (
        "interrupted before any shard was committed: nothing kept; rerun the same command to start"
    )
    no_output = SimpleNamespace(get=lambda key, default=None: None)  # stopped while composing
    assert interrupted_line(no_output).startswith("interrupted before anything was embedded")
