"""Who is alive: a pid is checked only in its own PID namespace of the same boot; anything else by its lease.

Two processes of one host in two PID namespaces (``unshare --pid --fork``:
both are pid 1 there) must see each other as alive while their heartbeats
are fresh: the one cannot wipe the other's job with ``tasks.overwrite=true``,
and two launches of one job share its shards without taking any over.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import OFFLINE, REPO

from img_search.store import read_embeddings, read_metadata
from img_search.testing.fixtures import write_photo_folder

EMBED = "img_search.pipeline.embed"
UNSHARE = ["unshare", "--pid", "--fork", "--kill-child"]


def unshare_refusal() -> str | None:
    """Why ``unshare --pid --fork`` cannot run here (None: it can)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --pid --fork is not permitted here: {probe.stderr.strip()}"
    return None


pytestmark = pytest.mark.skipif(unshare_refusal() is not None, reason=str(unshare_refusal()))


def job(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "models=simulated",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.batch_size=4",
        "tasks.shard_size=8",
        "tasks.num_workers=0",
        "tasks.cpu=true",
        *extra,
    ]


def in_namespace(args: list[str], log: Path, own_proc: bool = True) -> subprocess.Popen:
    """The CLI as pid 1 of a PID namespace of its own (killed with ``unshare``), seeing that
    namespace in its ``/proc`` (``own_proc``) or the parent's."""
    mount_proc = ["--mount-proc"] if own_proc else []
    return subprocess.Popen(
        [*UNSHARE, *mount_proc, sys.executable, "-m", EMBED, *args],
        cwd=REPO,
        env={**os.environ, **OFFLINE, "COLUMNS": "160"},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_until_embedding(out: Path, process: subprocess.Popen, log: Path) -> None:
    agreed = out.with_name(out.name + ".partial") / "agreed"
    deadline = time.monotonic() + 120
    while not (agreed / "identity-simulated.json").exists():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the job never started embedding"
        time.sleep(0.2)


def test_overwrite_is_refused_while_the_job_runs_in_another_pid_namespace(tmp_path, run_embed):
    folder = tmp_path / "photos"
    ids = write_photo_folder(folder, 96)
    out = tmp_path / "out.parquet"
    log = tmp_path / "namespaced.log"
    running = in_namespace(job(folder, out, "models.simulated.batch_seconds=0.25"), log)
    try:
        wait_until_embedding(out, running, log)
        refused = run_embed(*job(folder, out, "tasks.overwrite=true"), expect_ok=False)
        assert refused.returncode == 2, refused.stderr[-3000:]
        words = " ".join(refused.stderr.split())
        assert f"{out} is being written by another job (host {os.uname().nodename}, pid 1)" in words
        assert running.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        running.kill()
        running.wait()
    assert "rows: 96" in log.read_text()  # its state was not wiped: it finished its table
    assert sorted(read_embeddings(out).ids) == sorted(ids)


@pytest.mark.slow
def test_one_job_from_two_pid_namespaces_shares_its_shards_without_taking_any_over(tmp_path):
    folder = tmp_path / "photos"
    write_photo_folder(folder, 160)
    out = tmp_path / "out.parquet"
    args = job(folder, out, "models.simulated.batch_seconds=0.25", "models.simulated.jitter=0")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = in_namespace(args, logs[0])
    processes = [first]
    try:
        wait_until_embedding(out, first, logs[0])
        processes.append(in_namespace(args, logs[1], own_proc=False))
        codes = [p.wait(timeout=300) for p in processes]
    finally:
        for p in processes:
            p.kill()
            p.wait()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], texts[0][-2000:] + texts[1][-2000:]
    assert sum("rows: 160" in text for text in texts) == 1  # one of them finished the table
    table = read_embeddings(out)
    assert len(table.ids) == len(set(table.ids)) == 160
    # every shard claimed once (generation 0), never taken over from a process thought dead
    metadata = read_metadata(out)
    committed = [
        shard
        for process in metadata["run"]["processes"]
        for shard in (process.get("shards") or {}).get("simulated/image_folder", [])
    ]
    assert sorted(committed) == list(range(metadata["listings"]["image_folder"]["shards"]))
    both = [p for p in metadata["run"]["processes"] if p.get("shards")]
    assert [p["pid"] for p in both] == [1, 1]
    # the first one's /proc shows its namespace; the second one's shows ours: it records none
    assert sorted(p["pid_namespace"] is None for p in both) == [False, True]
    # and none embedded twice: the rows each process embedded add up to the table
    assert sum(s["rows"] for p in both for s in p["passes"]) == 160
    assert "taken over" not in texts[0] + texts[1]


def test_a_processes_file_that_is_not_an_object_is_named_and_ignored(tmp_path, run_embed):
    """A JSON list, or bytes that are not JSON, in ``processes/``: one warning each, no crash."""
    folder = tmp_path / "photos"
    write_photo_folder(folder, 24)
    out = tmp_path / "out.parquet"
    args = job(folder, out, "models.simulated.batch_seconds=0")
    killed = run_embed(*args, expect_ok=False, env={"IMG_SEARCH_FAULT": "commit:1"})
    assert killed.returncode != 0
    processes = out.with_name(out.name + ".partial") / "processes"
    (processes / "list.json").write_text(json.dumps([1, 2, 3]))
    (processes / "binary.json").write_bytes(b"\xff\xfe\x00")
    rerun = run_embed(*args)
    assert "rows: 24" in rerun.stdout and "resumed: 8 rows" in rerun.stdout
    warnings = [line for line in rerun.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, rerun.stderr[-3000:]
    assert f"{processes / 'list.json'}: holds a JSON list, not an object: ignored" in warnings[1]
    assert f"{processes / 'binary.json'}: not a readable JSON object (not UTF-8" in warnings[0]
    assert "Traceback" not in rerun.stderr
