"""What the engine that started this process says about it, read from the environment here only.

Engines decide which processes exist; the shard function is the same for
all of them. Each process claims shards through the output's files, so an
engine never hands out work: a Slurm array task runs the unchanged embed
command and takes what nobody holds. Three things still come from the
environment:

- *where a process starts* in the listing (``start_slot``): the ranks of a
  launch start apart, and so do the tasks of a Slurm array, so that they
  do not all race for the same first shards. Only the starting point: a
  fast task goes on taking shards, and shards a dead task held are taken
  over by whoever finds them (a rerun included);
- *which array task* a process belongs to, recorded in its process file
  (and from there in the table's ``run.processes``), so the summary shows
  which task did what;
- *which Slurm jobs have ended* (``ended_jobs``): a job submitted with
  ``--dependency=afterany:<array>`` starts once every task of the array has
  ended, so their processes are dead wherever they ran, without waiting for
  their heartbeats to go stale.

Slurm's own variables (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` …)
are read by neither Accelerate nor torch. The MPI world variables an
``srun`` MPI plugin sets (``PMI_SIZE``) are: on CPU Accelerate takes them for
a gloo world (``stray_mpi_world``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ArrayTask:
    """This process's Slurm array task."""

    #: ``SLURM_ARRAY_JOB_ID``: the array's job id (``%A``), what ``--dependency`` names.
    job: str
    #: ``SLURM_ARRAY_TASK_ID`` (``%a``), as given in ``--array``.
    task: int
    #: Its place among the array's tasks, 0 … ``count - 1``.
    index: int
    count: int

    @property
    def name(self) -> str:
        return f"{self.job}_{self.task}"


def array_task(environ: Mapping[str, str] = os.environ) -> ArrayTask | None:
    """The Slurm array task this process runs in (``sbatch --array``), if any.

    ``--array=0-7`` gives tasks 0 … 7 of 8; ``--array=8-15`` or ``1-15:2``
    are placed by ``SLURM_ARRAY_TASK_MIN`` and ``_STEP``; an irregular list
    (``--array=3,5``, a resubmission of the failed tasks) is spread over the
    span from its lowest to its highest id.
    """
    try:
        task = int(environ["SLURM_ARRAY_TASK_ID"])
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
        last = int(environ.get("SLURM_ARRAY_TASK_MAX", task))
        count = int(environ.get("SLURM_ARRAY_TASK_COUNT", last - first + 1))
        step = int(environ.get("SLURM_ARRAY_TASK_STEP", 1)) or 1
    except (KeyError, ValueError):
        return None
    offset = max(0, task - first)
    if (last - first) % step or (last - first) // step + 1 != count:  # an irregular list
        index, count = offset, last - first + 1
    else:
        index = offset // step
    count = max(1, count)
    job = environ.get("SLURM_ARRAY_JOB_ID") or environ.get("SLURM_JOB_ID", "")
    return ArrayTask(job=job, task=task, index=min(index, count - 1), count=count)


def start_slot(
    rank: int,
    ranks: int,
    worker: tuple[int, int] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> tuple[int, int]:
    """This process's place among all the processes that may work on the job: (slot, slots).

    Rank ``rank`` of a launch of ``ranks`` processes; in task ``i`` of an
    array of ``n`` tasks that run the same launch, slot ``i × ranks + rank``
    of ``n × ranks``; likewise in ``worker`` ``(i, n)`` of an engine of this
    package that starts its own workers (Ray: ``launch.Place.worker``).
    ``claim_order`` starts each slot on its own stretch.
    """
    task = array_task(environ)
    if task is not None:
        return task.index * ranks + rank, task.count * ranks
    if worker is not None and 0 <= worker[0] < worker[1]:
        return worker[0] * ranks + rank, worker[1] * ranks
    return rank, ranks


#: World sizes MPI launchers set, which Accelerate reads on CPU (before torch's ``WORLD_SIZE``).
MPI_WORLD_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def stray_mpi_world(environ: Mapping[str, str] = os.environ) -> list[str]:
    """MPI world sizes that no torch world goes with: the variables to ignore.

    ``srun`` with an MPI plugin (``--mpi=pmi2``, a cluster's default) gives
    every task ``PMI_SIZE``. On CPU, Accelerate takes it for a gloo world of
    that size and stops because ``MASTER_ADDR`` is unset. Without
    ``MASTER_ADDR`` (``accelerate launch`` sets it for its ``mpirun``
    launches) nor a torch launcher (``LOCAL_RANK``, ``WORLD_SIZE``), such a
    world cannot start; the process runs as a launch of its own instead, and
    shares the shards with the others through the output's files.
    """
    if any(k in environ for k in ("MASTER_ADDR", "LOCAL_RANK", "WORLD_SIZE")):
        return []
    return [k for k in MPI_WORLD_SIZES if environ.get(k, "1").strip() not in ("", "0", "1")]


def ended_jobs(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The Slurm jobs this job started after the end of: ``afterany``, ``afterok``, ``afternotok``.

    From ``SLURM_JOB_DEPENDENCY`` (the ``--dependency`` it was submitted
    with): ``afterany:4242`` names an array (every task ended) or a job,
    ``afterany:4242_3`` one task. Conditions joined by ``?`` (any one of
    them) say nothing of which one ended.
    """
    dependency = environ.get("SLURM_JOB_DEPENDENCY", "")
    if "?" in dependency:
        return frozenset()
    jobs = set()
    for condition in dependency.split(","):
        kind, _, ids = condition.partition(":")
        if kind.strip() in ("afterany", "afterok", "afternotok"):
            jobs.update(re.sub(r"\(.*\)$|\+\d+$", "", job.strip()) for job in ids.split(":"))
    return frozenset(jobs - {""})


def slurm_names(member: Mapping[str, Any]) -> set[str]:
    """What ``--dependency`` may call a process's job: its job, its array, its array task."""
    names = {str(member[k]) for k in ("slurm_job", "array_job") if member.get(k)}
    if member.get("array_task") is not None:
        names.add(f"{member.get('array_job')}_{member.get('array_task')}")
    return names
