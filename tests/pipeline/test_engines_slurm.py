"""Slurm job arrays: where each task starts, what srun's variables do, and a rerun right after a crash.

The array itself (tasks running the unchanged command on one output, a
killed task and the rerun that finishes) is in ``test_scale_out.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import OFFLINE, REPO

from img_search.data.base import position_shards
from img_search.pipeline.engines.slurm import array_task, start_slot, stray_mpi_world
from img_search.pipeline.state.claims import PairClaims, claim_order
from img_search.pipeline.state.ledger import Ledger


def array(task: int, count: int, first: int, last: int, step: int = 1) -> dict[str, str]:
    """The array variables of task ``task`` (``SLURM_ARRAY_TASK_ID``)."""
    return {
        "SLURM_ARRAY_JOB_ID": "77",
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_TASK_MIN": str(first),
        "SLURM_ARRAY_TASK_MAX": str(last),
        "SLURM_ARRAY_TASK_STEP": str(step),
    }


def test_array_tasks_and_their_ranks_start_apart():
    assert array_task({}) is None  # not in an array: the launch's ranks only
    assert start_slot(3, 8, environ={}) == (3, 8)
    assert array_task({"SLURM_ARRAY_TASK_ID": "x"}) is None
    # --array=0-7, --array=8-15 and --array=1-15:2: task i of 8 whatever the ids
    for first, step in ((0, 1), (8, 1), (1, 2)):
        tasks = [array(first + i * step, 8, first, first + 7 * step, step) for i in range(8)]
        assert [array_task(env).index for env in tasks] == list(range(8))
        assert {array_task(env).count for env in tasks} == {8}
    task = array_task(array(3, 8, 0, 7))
    assert (task.job, task.task, task.name) == ("77", 3, "77_3")
    # a resubmission of the failed tasks, --array=3,5,11: spread over the span 3 … 11
    ids = (3, 5, 11)
    places = [array_task(array(i, 3, 3, 11)) for i in ids]
    assert [(p.index, p.count) for p in places] == [(0, 9), (2, 9), (8, 9)]
    # task i of n, each a launch of 2 ranks: slots i × 2 + rank of n × 2, as one launch of 2n ranks
    shards = position_shards(4000, 48, unit=8)
    slots = [start_slot(r, 2, environ=array(t, 4, 0, 3)) for t in range(4) for r in range(2)]
    assert slots == [(s, 8) for s in range(8)]
    firsts = [claim_order(shards, *slot)[0] for slot in slots]
    assert firsts == [claim_order(shards, rank, 8)[0] for rank in range(8)]
    assert len(set(firsts)) == 8
    # worker i of n of the Ray engine starts the same way; a worker outside its count is ignored
    assert start_slot(1, 2, (2, 3), environ={}) == (5, 6)
    assert start_slot(1, 2, (3, 3), environ={}) == (1, 2)


def test_srun_mpi_variables_do_not_make_a_world():
    """srun's MPI plugin gives each task PMI_SIZE; Slurm's own variables are read by nobody."""
    assert stray_mpi_world({"PMI_SIZE": "4", "PMI_RANK": "1"}) == ["PMI_SIZE"]
    assert stray_mpi_world({"PMI_SIZE": "1"}) == []
    # a torch launcher (or accelerate's mpirun, which sets MASTER_ADDR) makes the world
    assert stray_mpi_world({"PMI_SIZE": "4", "LOCAL_RANK": "0"}) == []
    assert stray_mpi_world({"OMPI_COMM_WORLD_SIZE": "4", "MASTER_ADDR": "n1"}) == []
    script = (
        "from img_search.pipeline.distributed import make_accelerator\n"
        "a = make_accelerator(cpu=True, timeout_s=5)\n"
        "print(a.num_processes, a.process_index)\n"
    )
    slurm = {
        "SLURM_JOB_ID": "9",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "2",
        "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "2",
        "SLURM_NODEID": "0",
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_ARRAY_TASK_COUNT": "2",
        "PMI_SIZE": "4",
        "PMI_RANK": "2",
    }
    env = {**os.environ, **OFFLINE, **slurm}
    for name in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "MASTER_ADDR"):
        env.pop(name, None)
    ran = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.split() == ["1", "0"]  # alone: a launch of its own


def test_a_silent_owner_on_another_machine_is_waited_for_then_taken_over(tmp_path, monkeypatch):
    """A rerun started right after a task died elsewhere takes its shard when the lease runs out."""
    ledger = Ledger(tmp_path / "state", lease_s=4.0)  # heartbeats every 1 s; silent after 2 s
    ledger.join("spec", "rerun", rank=0)
    try:
        claims = ledger.path("claims", "clip", "photos")
        claims.mkdir(parents=True)
        for name, age in (("far-dead", 2.5), ("far-alive", 0.0)):
            member = ledger.processes_dir / f"{name}.json"
            member.write_text(json.dumps({"id": name, "host": "node-7", "pid": 1}))
            then = ledger.now() - age
            os.utime(member, (then, then))
        (claims / "000000.0").write_text('{"owner": "far-dead"}')
        (claims / "000001.0").write_text('{"owner": "far-alive"}')
        assert ledger.silent("far-dead") and not ledger.silent("far-alive")
        assert ledger.is_alive("far-dead")  # its lease has not run out yet
        pair = PairClaims(ledger, "clip", "photos", position_shards(20, 10))
        waits, outwait = [], ledger.outwait

        def seen(members) -> tuple[list[str], str | None]:
            """Who of ``members()`` is silent, and who holds shard 0."""
            silent = [m for m in members() if ledger.silent(m)]
            return silent, ledger.holder(pair.claim_name(0))

        def spy(members) -> None:
            began = seen(members)
            outwait(members)
            waits.append((began, seen(members)))

        monkeypatch.setattr(ledger, "outwait", spy)
        task = pair.claim_next()
        assert (task.shard.index, task.generation) == (0, 1)  # taken over, not left to a dead one
        # one wait, begun while far-dead was silent, ended when its lease ran out, and only then
        # was its shard taken over
        assert waits == [((["far-dead"], "far-dead"), ([], "far-dead"))]
        assert ledger.holder(pair.claim_name(0)) == ledger.me.id
        os.utime(ledger.processes_dir / "far-alive.json")
        assert pair.claim_next() is None  # a live owner keeps its shard, without a wait
    finally:
        ledger.leave()


def test_the_processes_of_an_array_this_job_waited_for_are_dead(tmp_path, monkeypatch):
    """--dependency=afterany:<array>: every task ended, whatever its heartbeat says."""
    from img_search.pipeline.engines.slurm import ended_jobs

    assert ended_jobs({"SLURM_JOB_DEPENDENCY": "afterany:4242"}) == {"4242"}
    assert ended_jobs({"SLURM_JOB_DEPENDENCY": "afterok:1:2_3(unfulfilled),after:9+5"}) == {
        "1",
        "2_3",
    }
    assert ended_jobs({"SLURM_JOB_DEPENDENCY": "afterany:1?afterany:2"}) == set()  # which one?
    assert ended_jobs({}) == set()
    monkeypatch.setenv("SLURM_JOB_DEPENDENCY", "afterany:4242,afterany:77_1")
    ledger = Ledger(tmp_path / "state", lease_s=60)
    ledger.join("spec", "finalize", rank=0)
    try:
        members = {
            "task-0": {"array_job": "4242", "array_task": 0, "slurm_job": "4243"},
            "task-1": {"array_job": "77", "array_task": 1, "slurm_job": "78"},
            "task-2": {"array_job": "77", "array_task": 2, "slurm_job": "79"},
            "plain": {"slurm_job": "4242"},
            "running": {"array_job": "5000", "array_task": 0, "slurm_job": "5001"},
        }
        for name, slurm in members.items():  # on other machines, fresh heartbeats
            member = {"id": name, "host": "node-3", "pid": 1, **slurm}
            (ledger.processes_dir / f"{name}.json").write_text(json.dumps(member))
        alive = [name for name in members if ledger.is_alive(name)]
        assert alive == ["task-2", "running"]
    finally:
        ledger.leave()
