"""The job's state on the (shared) filesystem: who works on the output, and what the job is.

Everything lives in ``<output>.partial/`` and is plain files, so processes of
one launch, of two launches on two machines, of a Slurm array or of a Ray
cluster coordinate through the filesystem alone:

- ``processes/<host>-<pid>.json``: one per process, its heartbeat (the file's
  mtime, refreshed by a thread) and its statistics;
- ``job.json``: the job's spec and its (model, dataset) pairs;
- ``agreed/<what>.json``: values every process must agree on once known
  (a source's listing, a model's preprocessing): the first to know writes
  it, the others compare.

A process is alive while its heartbeat is fresher than ``lease_s``; in its
own PID namespace of the same boot (``liveness.provable``) a dead process is
recognised at once (its pid is gone, or now belongs to a process that
started later), and so is one of a Slurm job this job was started after the
end of (``--dependency=afterany:<array>``). Any other (another machine,
container or PID namespace) that has missed two heartbeats is *silent*:
probably dead (killed with its Slurm array task, its node lost), so whoever
would leave work to it waits for it to beat again or for its lease to run
out (``outwait``), and a rerun started right after a crash still finishes
the job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from img_search.atomic import atomic_write_text, create_exclusive, is_temporary
from img_search.host import HOST
from img_search.pipeline.engines.slurm import array_task, ended_jobs, slurm_names
from img_search.pipeline.state.liveness import here, pid_alive, process_start_time, provable
from img_search.pipeline.state.state_files import read_json, warn_once

log = logging.getLogger(__name__)
__all__ = ["Ledger", "Member", "describe", "read_json"]


@dataclass
class Member:
    """A process that works (or worked) on the output."""

    id: str
    host: str
    pid: int
    started: str | None
    spec_fingerprint: str
    launch: str  # the launch (one torchrun / accelerate / array task) it belongs to
    rank: int
    #: The Slurm array (``SLURM_ARRAY_JOB_ID``) and task (``SLURM_ARRAY_TASK_ID``) it runs in.
    array_job: str | None = None
    array_task: int | None = None
    #: Its Slurm job (``SLURM_JOB_ID``): one per array task.
    slurm_job: str | None = None
    #: Where its pid means something (``liveness.here``): the boot and the PID namespace.
    boot_id: str | None = None
    pid_namespace: int | None = None

    def describe(self) -> str:
        return describe(self.__dict__)


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def describe(member: dict[str, Any]) -> str:
    """``array task 1234_3 (host h, pid p)``, or ``host h, pid p`` outside an array."""
    where = f"host {member.get('host')}, pid {member.get('pid')}"
    if member.get("array_task") is None:
        return where
    return f"array task {member.get('array_job')}_{member.get('array_task')} ({where})"


class Ledger:
    def __init__(self, state_dir: str | os.PathLike[str], lease_s: float = 120.0) -> None:
        self.state_dir = Path(state_dir)
        self.lease_s = lease_s
        self.me: Member | None = None
        #: Slurm jobs that ended before this one started: their processes are dead.
        self.ended_jobs = ended_jobs()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- files --------------------------------------------------------------------
    @property
    def job_file(self) -> Path:
        return self.state_dir / "job.json"

    @property
    def processes_dir(self) -> Path:
        return self.state_dir / "processes"

    def path(self, *parts: str) -> Path:
        return self.state_dir.joinpath(*parts)

    def exists(self) -> bool:
        return self.job_file.is_file()

    # -- processes ------------------------------------------------------------------
    def join(self, spec_fingerprint: str, launch: str, rank: int) -> Member:
        """Register this process and keep its heartbeat fresh until ``leave()``."""
        pid = os.getpid()
        task = array_task()
        self.me = Member(
            id=f"{HOST}-{pid}-{uuid.uuid4().hex[:6]}",  # a reused pid is another process
            host=HOST,
            pid=pid,
            started=process_start_time("self"),
            spec_fingerprint=spec_fingerprint,
            launch=launch,
            rank=rank,
            array_job=task.job if task else None,
            array_task=task.task if task else None,
            slurm_job=os.environ.get("SLURM_JOB_ID"),
            **here(),
        )
        self.processes_dir.mkdir(parents=True, exist_ok=True)
        self.update({"joined": time.time()})
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="img_search-heartbeat", daemon=True)
        self._thread.start()
        return self.me

    def update(self, values: dict[str, Any]) -> None:
        """Merge ``values`` into this process's file (its statistics), which also beats the heart."""
        assert self.me is not None
        path = self.processes_dir / f"{self.me.id}.json"
        current = read_json(path) or {}
        current.update(self.me.__dict__)
        current.update(values)
        try:
            atomic_write_text(path, json.dumps(current, default=str))
        except FileNotFoundError:
            if self.state_dir.exists():
                raise
            # another process finished the table and removed the job state after this
            # process's last commit; what it did is in the table, only these statistics are not
            log.warning(
                "the job state %s is gone: this process's statistics are not recorded",
                self.state_dir,
            )

    def leave(self) -> None:
        """Stop the heartbeat (the process file stays: it holds this process's statistics)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def depart(self) -> None:
        """Leave without a trace: this process did nothing here (a refusal, or nothing to do)."""
        self.leave()
        if self.me is not None:
            (self.processes_dir / f"{self.me.id}.json").unlink(missing_ok=True)
        if not self.exists():
            with contextlib.suppress(OSError):
                self.processes_dir.rmdir()
                self.state_dir.rmdir()

    @property
    def beat_s(self) -> float:
        """How often a process's heartbeat is refreshed."""
        return max(1.0, self.lease_s / 8)

    def _beat(self) -> None:
        assert self.me is not None
        path = self.processes_dir / f"{self.me.id}.json"
        while not self._stop.wait(self.beat_s):
            with contextlib.suppress(OSError):
                os.utime(path)

    def members(self) -> Iterator[tuple[dict[str, Any], float]]:
        """Every process file and its heartbeat time."""
        if not self.processes_dir.is_dir():
            return
        for path in sorted(self.processes_dir.glob("*.json")):
            if is_temporary(path.name):
                continue
            data = read_json(path)
            with contextlib.suppress(FileNotFoundError):
                if data is not None:
                    yield data, path.stat().st_mtime

    def now(self) -> float:
        """The filesystem's clock (the heartbeat files' mtimes come from it, not from ours)."""
        if self.me is not None:
            path = self.processes_dir / f"{self.me.id}.json"
            with contextlib.suppress(OSError):
                os.utime(path)
                return path.stat().st_mtime
        return time.time()

    def is_alive(self, member_id: str) -> bool:
        if self.me is not None and member_id == self.me.id:
            return True
        data = read_json(self.processes_dir / f"{member_id}.json")
        if data is None or slurm_names(data) & self.ended_jobs:
            return False
        if provable(data):
            return pid_alive(data["pid"], data.get("started"))
        try:
            beat = (self.processes_dir / f"{member_id}.json").stat().st_mtime
        except FileNotFoundError:
            return False
        return self.now() - beat < self.lease_s

    def silent(self, member_id: str | None) -> bool:
        """A process on another machine that missed two heartbeats, whose lease has not run out."""
        if not member_id or (self.me is not None and member_id == self.me.id):
            return False
        path = self.processes_dir / f"{member_id}.json"
        data = read_json(path)
        if data is None or provable(data) or slurm_names(data) & self.ended_jobs:
            return False  # known dead (or alive) at once
        try:
            age = self.now() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        return 2 * self.beat_s < age < self.lease_s

    def outwait(self, members: Callable[[], list[str | None]]) -> None:
        """Wait while any of ``members()`` is silent: until it beats again or its lease runs out."""
        silent = [m for m in members() if self.silent(m)]
        if not silent:
            return
        log.info(
            "waiting up to %.0fs (tasks.lease_s) for %d silent process(es) on other machines "
            "(%s): a dead one's work is taken over when its lease runs out",
            self.lease_s,
            len(silent),
            ", ".join(str(m) for m in silent[:4]),
        )
        deadline = time.monotonic() + self.lease_s + self.beat_s
        while silent and time.monotonic() < deadline:
            time.sleep(self.beat_s)
            silent = [m for m in members() if self.silent(m)]

    def live_members(self) -> list[dict[str, Any]]:
        return [data for data, _ in self.members() if self.is_alive(str(data.get("id")))]

    def working_members(self) -> list[dict[str, Any]]:
        """Other live processes that have not said they are done (they may still write here).

        The main process of a launch finalises after its own ranks are done
        (they met it at the end), so this is other launches: one that has
        committed its last shard but not yet recorded its statistics.
        """
        me = self.me.id if self.me is not None else None
        return [m for m in self.live_members() if m.get("id") != me and not m.get("done")]

    # -- exclusive holds -----------------------------------------------------------
    def take(self, name: str) -> int | None:
        """Hold ``name`` (a shard, the right to finish the table) for this process.

        Returns the generation of the hold, or None while a live process holds
        it (or won the race). A dead holder's generation ``g`` is taken over by
        creating generation ``g + 1`` exclusively, so one process wins.
        """
        assert self.me is not None
        generation = self.generation(name)
        if generation is not None:
            holder = (read_json(self._hold_path(name, generation)) or {}).get("owner", "")
            if self.is_alive(str(holder)):
                return None
        generation = 0 if generation is None else generation + 1
        path = self._hold_path(name, generation)
        path.parent.mkdir(parents=True, exist_ok=True)
        owner = json.dumps({"owner": self.me.id, "rank": self.me.rank})
        return generation if create_exclusive(path, owner) else None

    def holder(self, name: str) -> str | None:
        """Who holds ``name`` now (``host-pid``), if anyone ever took it."""
        generation = self.generation(name)
        if generation is None:
            return None
        return (read_json(self._hold_path(name, generation)) or {}).get("owner")

    def release(self, name: str, why: str) -> None:
        """Take ``name`` from whoever holds it, for nobody: the next ``take`` gets it."""
        generation = self.generation(name)
        path = self._hold_path(name, 0 if generation is None else generation + 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        create_exclusive(path, json.dumps({"owner": "", "released": why}))

    def holds(self, name: str, generation: int) -> bool:
        """Still ours: nobody took ``name`` over since."""
        return not self._hold_path(name, generation + 1).exists()

    def generation(self, name: str) -> int | None:
        generation = None
        while self._hold_path(name, 0 if generation is None else generation + 1).exists():
            generation = 0 if generation is None else generation + 1
        return generation

    def _hold_path(self, name: str, generation: int) -> Path:
        return self.path("claims", f"{name}.{generation}")

    # -- the job record -------------------------------------------------------------
    def read_job(self) -> dict[str, Any] | None:
        """The job record; None if there is none, or one that is not a job record (named once)."""
        record = read_json(self.job_file)
        if record is None:
            return None
        pairs, todo = record.get("pairs"), record.get("todo")
        if (
            isinstance(record.get("spec"), dict)
            and isinstance(pairs, list)
            and isinstance(todo, list)
            and all(_is_pair(p) for p in [*pairs, *todo])
        ):
            return record
        warn_once(self.job_file, "not a job record (a spec, its pairs, what is left): ignored")
        return None

    def write_job(self, record: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.job_file, json.dumps(record, indent=1, default=str))

    def agreed(self, what: str) -> dict[str, Any] | None:
        """The recorded value of ``what``, if any process recorded one."""
        return read_json(self.path("agreed", f"{what}.json"))

    def agree(self, what: str, value: dict[str, Any]) -> dict[str, Any]:
        """The value of ``what`` every process of the job uses: the first one recorded."""
        path = self.path("agreed", f"{what}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        if create_exclusive(path, json.dumps(value, default=str)):
            return value
        recorded = read_json(path)
        if recorded is None:  # written by a killed process without content: replace it
            atomic_write_text(path, json.dumps(value, default=str))
            return value
        return recorded
