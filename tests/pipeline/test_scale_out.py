"""Shards from a laptop to a cluster: many ranks, two launches or a Slurm array's tasks on one output, a killed rank or task.

Every test runs real processes (torchrun with gloo ranks on CPU, plain
``python -m``) over real files, and checks the finished table row by row.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import OFFLINE, REPO, built_once, run_module, venv_bin

from img_search.data.base import position_shards
from img_search.store import EmbeddingMatrix, read_embeddings, read_metadata
from img_search.testing.fixtures import write_photo_folder

#: Launchers listen on ports: the tests that start them run one at a time (the xdist group "launch").
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("launch")]


def torchrun(ranks: int) -> list[str]:
    return [venv_bin("torchrun"), "--standalone", "--nproc_per_node", str(ranks)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[int, tuple[Path, list[str]]]:
    """Folders of 2,003 and 503 small JPEGs (the 503 are the first of the 2,003), made once per
    session: the launch tests of several modules run interleaved on one worker."""

    def build(root: Path) -> dict[str, list]:
        return {
            str(n): [str(root / str(n)), write_photo_folder(root / str(n), n)] for n in (2003, 503)
        }

    built = built_once(tmp_path_factory, "scale-out-photos", build)
    return {int(n): (Path(folder), ids) for n, (folder, ids) in built.items()}


def clip_job(checkpoint: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "models=clip",
        f"models.clip.model_name={checkpoint}",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.batch_size=16",
        "tasks.num_workers=0",
        "tasks.shard_size=97",
        "tasks.cpu=true",
        "tasks.collective_timeout_s=300",
        *extra,
    ]


def checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def same_rows(got, reference) -> None:
    assert len(set(got.ids)) == len(got.ids) == len(reference.ids)
    assert sorted(got.ids) == sorted(reference.ids)
    np.testing.assert_allclose(
        got.vectors[np.argsort(got.ids)], reference.vectors[np.argsort(reference.ids)], atol=1e-5
    )


def shards_by_process(metadata: dict, pair: str) -> dict[str, list[int]]:
    """Which shards each process finished, from the processes' own counts."""
    found = {}
    for process in metadata["run"]["processes"]:
        for done in process.get("passes", []):
            if f"{done['model']}/{done['dataset']}" == pair:
                found[process["id"]] = done["shards"]
    return found


def one_process(checkpoint: Path, folder: Path, ids: list[str]) -> EmbeddingMatrix:
    """The same model over the same images in this one process, batch by batch."""
    from img_search.embedding import get_encoder
    from img_search.images import open_image

    encoder = get_encoder({"model": "clip", "model_name": str(checkpoint)}, name="clip").load()
    transform = encoder.image_transform()
    vectors = [
        encoder.encode_images(
            transform.collate([transform(open_image(str(folder / i))) for i in ids[s : s + 16]])
        ).numpy()
        for s in range(0, len(ids), 16)
    ]
    return EmbeddingMatrix(np.array(ids, dtype=object), np.concatenate(vectors))


def test_eight_ranks_each_item_once_and_coordination_does_not_grow(
    photos, tiny_checkpoints, tmp_path
):
    folder, ids = photos[2003]
    reference = one_process(tiny_checkpoints["clip"], folder, ids)

    calls = {}
    for n in (2003, 503):
        out = tmp_path / f"eight-{n}.parquet"
        job = clip_job(tiny_checkpoints["clip"], photos[n][0], out)
        checked(run_module("img_search.pipeline.embed", *job, launcher=torchrun(8), timeout=900))
        metadata = read_metadata(out)
        processes = metadata["run"]["processes"]
        assert len(processes) == metadata["num_processes"] == 8
        calls[n] = sorted(p["collectives"] for p in processes)
        shards = shards_by_process(metadata, "clip/image_folder")
        committed = sorted(s for done in shards.values() for s in done)
        # at 2,003 items: 12 full shards, then 24 shrinking ones
        layout = position_shards(n, 97, unit=16)
        assert committed == list(range(len(layout)))  # every shard once
        assert any(s.tail for s in layout) == (n == 2003)
        if n == 2003:
            same_rows(read_embeddings(out), reference)
            assert sum(1 for done in shards.values() if done) >= 6  # the work was spread
    assert calls[2003] == calls[503]  # per-rank collective calls do not grow with the items
    assert max(calls[2003]) <= 10


def simulated_job(folder: Path, out: Path, batch_seconds: float, *extra: str) -> list[str]:
    return [
        "models=simulated",
        f"models.simulated.batch_seconds={batch_seconds}",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.batch_size=4",
        "tasks.num_workers=0",
        "tasks.shard_size=20",
        "tasks.cpu=true",
        "tasks.collective_timeout_s=300",
        *extra,
    ]


def start(
    args: list[str],
    launcher: list[str] | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
):
    import os

    command = [*(launcher or [sys.executable]), "-m", "img_search.pipeline.embed", *args]
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1", **(env or {})}
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def simulated_reference(photos, tmp_path_factory):
    """The 503 photos embedded by one process with no simulated device time."""
    out = tmp_path_factory.mktemp("simulated") / "reference.parquet"
    checked(run_module("img_search.pipeline.embed", *simulated_job(photos[503][0], out, 0.0)))
    return read_embeddings(out)


def test_two_launches_share_one_output(photos, simulated_reference, tmp_path):
    """2 torchrun ranks and 1 plain process, started together on one output: one table, no shard twice."""
    folder, _ = photos[503]
    out = tmp_path / "shared.parquet"
    job = simulated_job(folder, out, 0.15)
    ranks = start(job, torchrun(2), tmp_path / "ranks.log")
    single = start(job, None, tmp_path / "single.log")
    assert ranks.wait(timeout=600) == 0, (tmp_path / "ranks.log").read_text()[-4000:]
    assert single.wait(timeout=600) == 0, (tmp_path / "single.log").read_text()[-4000:]
    same_rows(read_embeddings(out), simulated_reference)
    metadata = read_metadata(out)
    shards = shards_by_process(metadata, "simulated/image_folder")
    committed = sorted(s for done in shards.values() for s in done)
    # 503 items: 13 shards of 20 and one of 19, then 8 each of 16, 8 and 4 items
    layout = position_shards(503, 20, unit=4)
    assert [len(s) for s in layout][-25:] == [19, *[16] * 8, *[8] * 8, *[4] * 8]
    assert committed == list(range(len(layout)))  # each committed exactly once
    launches = {p["launch"] for p in metadata["run"]["processes"] if shards.get(p["id"])}
    assert len(launches) == 2  # both launches did part of the work
    assert not out.with_name(out.name + ".partial").exists()


def final_records(state: Path) -> dict[int, dict]:
    records = {}
    for path in (state / "records" / "simulated" / "image_folder").glob("*.json"):
        record = json.loads(path.read_text())
        if record.get("final"):
            records[record["shard"]] = record
    return records


def test_a_killed_rank_then_a_rerun_embeds_no_committed_shard_again(
    photos, simulated_reference, tmp_path
):
    folder, _ = photos[503]
    out = tmp_path / "killed.parquet"
    job = simulated_job(folder, out, 0.02)
    crashed = run_module(
        "img_search.pipeline.embed",
        *job,
        launcher=torchrun(4),
        timeout=600,
        env={"IMG_SEARCH_FAULT": "commit@2:3"},
    )
    assert crashed.returncode != 0
    assert not out.exists()
    before = final_records(out.with_name(out.name + ".partial"))
    committed_rows = sum(r["rows"] for r in before.values())
    assert len(before) >= 3

    rerun = checked(
        run_module("img_search.pipeline.embed", *job, launcher=torchrun(4), timeout=600)
    )
    resumed = int(rerun.stdout.split("resumed: ")[1].split()[0])
    assert resumed >= committed_rows
    same_rows(read_embeddings(out), simulated_reference)
    metadata = read_metadata(out)
    processes = metadata["run"]["processes"]
    assert len(processes) == 8 and len({p["launch"] for p in processes}) == 2  # killed ones too
    shards = shards_by_process(metadata, "simulated/image_folder")  # finished passes: the rerun's
    redone = {s for done in shards.values() for s in done} & set(before)
    assert not redone, f"committed shards embedded again: {sorted(redone)}"


def array_task_env(task: int, count: int) -> dict[str, str]:
    """What Slurm sets in the batch step of task ``task`` of ``sbatch --array=0-<count - 1>``.

    Slurm's per-task variables (``SLURM_PROCID``, ``SLURM_NTASKS``, …) are
    there too: neither Accelerate nor torch may take them for a world.
    """
    return {
        "SLURM_JOB_ID": str(4243 + task),
        "SLURM_ARRAY_JOB_ID": "4242",
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": str(count - 1),
        "SLURM_ARRAY_TASK_STEP": "1",
        "SLURM_JOB_NAME": "embed_array",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NTASKS": "1",
        "SLURM_NNODES": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_CPUS_ON_NODE": "2",
        "SLURM_SUBMIT_DIR": str(REPO),
    }


def start_array(job: list[str], tasks: int, logs: Path) -> list[subprocess.Popen]:
    """``tasks`` array tasks started at once, each running the unchanged command."""
    return [
        start(job, log=logs / f"task{t}.log", env=array_task_env(t, tasks)) for t in range(tasks)
    ]


def committed_once(metadata: dict, items: int) -> dict[str, list[int]]:
    """Every shard committed exactly once (by the completion records' owners); shards by process."""
    shards = {
        p["id"]: p["shards"].get("simulated/image_folder", []) for p in metadata["run"]["processes"]
    }
    assert sorted(s for done in shards.values() for s in done) == list(
        range(len(position_shards(items, 20, unit=4)))
    )
    return shards


def test_slurm_array_tasks_share_one_output(photos, simulated_reference, tmp_path):
    """3 tasks of an array run the same command on one output: the table of 1 process, each shard once."""
    folder, _ = photos[503]
    out = tmp_path / "array.parquet"
    tasks = start_array(simulated_job(folder, out, 0.15), 3, tmp_path)
    logs = []
    for t, task in enumerate(tasks):
        assert task.wait(timeout=600) == 0, (tmp_path / f"task{t}.log").read_text()[-4000:]
        logs.append((tmp_path / f"task{t}.log").read_text())
    same_rows(read_embeddings(out), simulated_reference)
    metadata = read_metadata(out)
    processes = metadata["run"]["processes"]
    # three launches of one process each (no world made of Slurm's variables), task ids recorded
    assert sorted(p["array_task"] for p in processes) == [0, 1, 2]
    assert {p["array_job"] for p in processes} == {"4242"}
    assert len({p["launch"] for p in processes}) == 3 and {p["rank"] for p in processes} == {0}
    shards = committed_once(metadata, 503)
    assert len({p["array_task"] for p in processes if shards[p["id"]]}) >= 2
    assert sum("shards by array task: 4242_0: " in text for text in logs) == 1  # the finaliser
    for text in logs:
        for line in text.splitlines():
            if line.startswith("not finished yet: "):  # a task that left the table to the others
                # ... while they still held shards, or while one of them was assembling the table
                assembling = line.endswith("another process is assembling the table")
                assert assembling or ("other process" in line and "rerun this same command" in line)


def holds_unfinished_shard(state: Path, pid: int) -> bool:
    """Process ``pid`` holds a claim on a shard whose completion record is not final."""
    for claim in state.glob("claims/simulated/image_folder/*.*"):
        text = claim.read_text() if claim.stat().st_size else "{}"
        if json.loads(text).get("owner", "").split("-")[-2:-1] == [str(pid)]:
            record = state / "records" / "simulated" / "image_folder" / f"{claim.stem}.json"
            if not record.exists() or not json.loads(record.read_text()).get("final"):
                return True
    return False


def test_a_killed_array_task_leaves_its_shards_to_one_rerun(photos, simulated_reference, tmp_path):
    """Task 2 stops holding a shard; the others exit 0 saying so; it is killed; one rerun finishes."""
    import os
    import signal
    import time

    folder, _ = photos[503]
    out = tmp_path / "killed-task.parquet"
    state = out.with_name(out.name + ".partial")
    job = simulated_job(folder, out, 0.1)
    tasks = start_array(job, 3, tmp_path)
    deadline = time.monotonic() + 300
    while True:  # stop task 2 while it holds a shard: alive to the others (its pid), doing nothing
        assert tasks[2].poll() is None and time.monotonic() < deadline, "task 2 held no shard"
        if holds_unfinished_shard(state, tasks[2].pid):
            os.kill(tasks[2].pid, signal.SIGSTOP)
            if holds_unfinished_shard(state, tasks[2].pid):
                break
            os.kill(tasks[2].pid, signal.SIGCONT)
        time.sleep(0.1)
    try:
        for t in (0, 1):
            assert tasks[t].wait(timeout=600) == 0, (tmp_path / f"task{t}.log").read_text()[-4000:]
            said = (tmp_path / f"task{t}.log").read_text().split("not finished yet: ")[1]
            assert "array task 4242_2" in said.splitlines()[0]
            assert "rerun this same command once they have stopped" in said
        assert not out.exists()
    finally:
        os.kill(tasks[2].pid, signal.SIGKILL)
        tasks[2].wait(timeout=60)

    # finalize.sbatch: the same command, in a job started after the array ended
    after = {"SLURM_JOB_ID": "4250", "SLURM_JOB_DEPENDENCY": "afterany:4242"}
    rerun = checked(run_module("img_search.pipeline.embed", *job, env=after))
    assert "rows: 503" in rerun.stdout
    same_rows(read_embeddings(out), simulated_reference)
    metadata = read_metadata(out)
    shards = committed_once(metadata, 503)
    by_task = {p.get("array_task"): shards[p["id"]] for p in metadata["run"]["processes"]}
    assert set(by_task) == {0, 1, 2, None}  # None: the rerun, outside the array
    assert by_task[None]  # it embedded what task 2 held
    assert "shards by array task: 4242_0: " in rerun.stdout and "no array: " in rerun.stdout
