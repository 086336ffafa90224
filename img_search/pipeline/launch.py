"""One launch of a job in this process, for every engine: open the output, work, leave, summarise.

plan (config only; ``plan.py``) → open the output (main process: the same
job, an append, or a refusal; ``state/output.py``) → the work: every
process's share of the pending pairs (``pairs.py``), then whoever finds every
shard committed finishes the table (``state/finalize.py``), redone a few
times for shards the finaliser sent back (``rounds``) → the one summary and
exit code (``conclude``).

An engine only decides which processes exist and what each may use
(``Place``): the ranks of a launch and the tasks of a Slurm array run
``run_job``; the Ray driver and each Ray actor call ``launch`` with their own
place (``engines/ray_driver.py``, ``engines/ray_actor.py``). The processes of
a launch meet only to build and at the end; processes of other launches share
the same shards through the output's filesystem.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from accelerate import Accelerator

from img_search.host import usable_cores
from img_search.pipeline.distributed import (
    finish,
    gather_to_main,
    local_world_size,
    make_accelerator,
    on_main,
)
from img_search.pipeline.engines.slurm import start_slot
from img_search.pipeline.job_progress import JobProgress
from img_search.pipeline.pairs import run_pairs, share_cpu_threads
from img_search.pipeline.plan import Job, spec_fingerprint
from img_search.pipeline.reporting import ProcessReport, print_result_lines, print_summary
from img_search.pipeline.state.claims import committed_by, pair_claims
from img_search.pipeline.state.finalize import Outcome, finalize
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.output import Opening, forget_failed_start, open_output
from img_search.store.space import explain_refused_write

log = logging.getLogger(__name__)

Pair = tuple[str, str]


@dataclass(frozen=True)
class Place:
    """What an engine decides about one process; the run machinery takes nothing else from it."""

    #: (i, n) among an engine's own workers (a Ray actor); None: the environment says (Slurm).
    worker: tuple[int, int] | None = None
    #: CPUs this process may use (a Ray actor's ``num_cpus_per_worker``); None: its machine share.
    cores: float | None = None
    #: Run on the CPU whatever ``tasks.cpu`` says (a Ray actor without a GPU; the Ray driver).
    cpu: bool = False
    #: Joins an output another process opened (a Ray actor): resumes it, never overwrites or
    #: discards it, and leaves no trace if it commits nothing.
    joins: bool = False
    #: False: claims nothing, "done" from the start, so that others finish the table (the Ray driver).
    embeds: bool = True
    #: What the process is to the job, in its process file and the summary (``ray worker 2 of 4``).
    role: str | None = None


@dataclass
class Run:
    """One process's launch, as ``launch`` built it; what the pairs, the pass and the finaliser take."""

    job: Job
    place: Place
    accelerator: Accelerator
    ledger: Ledger
    opening: Opening
    #: Where this process starts in the listing (``engines.slurm.start_slot``).
    slot: tuple[int, int]
    #: CPUs this process may use: its place's, or its share of the machine.
    cores: float
    #: Loader worker processes of a pass (``tasks.num_workers``, or chosen from ``cores``).
    loader_workers: int
    progress: JobProgress
    #: Rows of each pair committed before this launch embedded it (main process; ``rounds``).
    resumed: dict[Pair, int] = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


@dataclass
class Launched:
    """What a launch did: each process's report and what the end found."""

    #: Every process's report of the launch (a Ray driver: its own and its actors').
    reports: list[ProcessReport]
    #: None: the output was complete when the launch opened it (``message`` says so).
    outcome: Outcome | None
    message: str = ""
    #: Rows of each pair committed before this launch embedded it: an earlier run's (main process).
    resumed: dict[Pair, int] = field(default_factory=dict)
    #: Workers that died (Ray actors): with the table unfinished, the exit code is 3.
    died: list[str] = field(default_factory=list)
    #: Whether this is the launch's main process, the one that prints the summary.
    main: bool = True


#: A launch's work: every process's reports and the outcome of finishing the table.
Work = Callable[[Run], tuple[list[ProcessReport], Outcome]]

#: How many times a launch embeds again the shards its finaliser sent back before it gives up
#: (and says to rerun): a part that fails its check twice in a row is not a stale copy.
REDO_ROUNDS = 2


def run_job(job: Job) -> int:
    """Embed every (model, dataset) of ``job`` into its output with this process's launch (the
    local engine: one process, the ranks of torchrun / accelerate, a Slurm array task); the exit code.

    Exactly once and resumable: a shard counts when its completion record
    says so, whichever process wrote it; a rerun of the same command takes
    over what a stopped process held.
    """
    return conclude(launch(job), job)


def launch(job: Job, place: Place = Place(), work: Work | None = None) -> Launched:
    """Open → work → leave, for every engine; ``work`` defaults to this launch's own processes
    embedding their share and finishing the table (``local_rounds``).

    The settings are read, never changed: what the place decides travels in the ``Run``.
    """
    settings = job.settings
    accelerator = make_accelerator(
        cpu=settings.cpu or place.cpu, timeout_s=settings.collective_timeout_s
    )
    share_cpu_threads(accelerator, place.cores)
    ledger = Ledger(job.layout.state_dir, settings.lease_s)
    opening = on_main(accelerator, lambda: open_output(job, ledger, join=place.joins))
    main = accelerator.is_main_process
    if opening.complete:
        finish(accelerator)
        return Launched([], None, opening.message, main=main)
    if not main:
        ledger.join(spec_fingerprint(job.spec()), opening.launch, accelerator.process_index)
    noted = {"role": place.role} if place.role else {}
    if not place.embeds:  # "done" from the start: the finaliser waits for no shard of it
        noted["done"] = True
    if noted:
        ledger.update(noted)
    run = make_run(job, place, accelerator, ledger, opening)
    with leaving_on_failure(run), run.progress:
        reports, outcome = (work or local_rounds)(run)
    finish(accelerator)
    for stats in (s for report in reports for s in report.stats):
        stats.resumed = run.resumed.get((stats.model_name, stats.dataset_name), 0)
    return Launched(reports, outcome, resumed=run.resumed, main=main)


def make_run(
    job: Job, place: Place, accelerator: Accelerator, ledger: Ledger, opening: Opening
) -> Run:
    """What ``place`` means for this process: where it starts, its cores, its loader workers."""
    local = local_world_size(accelerator)
    cores = place.cores if place.cores is not None else usable_cores() / local
    heavy = job.modality.cpu_heavy_prepare
    return Run(
        job=job,
        place=place,
        accelerator=accelerator,
        ledger=ledger,
        opening=opening,
        slot=start_slot(accelerator.process_index, accelerator.num_processes, place.worker),
        cores=cores,
        loader_workers=job.settings.loader_workers(
            accelerator.device.type, local, heavy, cores=cores
        ),
        progress=JobProgress(ledger, opening.pending, accelerator.is_main_process),
    )


def count_resumed(run: Run, pairs: list[Pair]) -> None:
    """Main process, before this launch embeds ``pairs``: the rows an earlier run committed, counted
    once per pair, not what other processes commit meanwhile (nor shards the finaliser sent back)."""
    if run.main:
        for pair in pairs:
            if pair not in run.resumed:
                run.resumed[pair] = pair_claims(run.ledger, *pair).committed_rows()


def local_rounds(run: Run) -> tuple[list[ProcessReport], Outcome]:
    """This launch's processes embed their share together, then the main process finishes the table."""

    def embed(pending: list[Pair]) -> list[ProcessReport]:
        return gather_to_main(run.accelerator, run_pairs(run, pending))

    def end() -> Outcome:
        return on_main(run.accelerator, lambda: finalize(run.job, run.ledger))

    return rounds(run, embed, end)


def rounds(
    run: Run, embed: Callable[[list[Pair]], list[ProcessReport]], finish: Callable[[], Outcome]
) -> tuple[list[ProcessReport], Outcome]:
    """``embed`` the pending pairs, ``finish``; then, for shards the finaliser sent back (a record
    or part failed a check), up to ``REDO_ROUNDS`` times ``embed`` them again and ``finish``."""
    count_resumed(run, run.opening.pending)
    reports = embed(run.opening.pending)
    run.progress.poll()  # every process of this launch is done: its last commits, before the state goes
    outcome = finish()
    for _ in range(REDO_ROUNDS):
        if not outcome.redo:
            break
        if run.place.embeds:  # working again: a finaliser elsewhere waits for it
            run.ledger.update({"done": False})
        count_resumed(run, outcome.redo)
        reports = merged(reports, embed(outcome.redo))
        outcome = finish()
    run.progress.end(outcome)
    return reports, outcome


def merged(reports: list[ProcessReport], more: list[ProcessReport]) -> list[ProcessReport]:
    """A process's reports of two rounds as one; a process new in the second one (a Ray actor
    started for it) is added."""
    known = {report.id: report for report in reports}
    for report in more:
        earlier = known.get(report.id)
        if earlier is None:
            reports.append(report)
            continue
        earlier.stats.extend(report.stats)
        earlier.collectives, earlier.collective_bytes = report.collectives, report.collective_bytes
    return reports


def conclude(launched: Launched, job: Job) -> int:
    """The summary (main process) and the exit code: 0; 1 over ``tasks.max_errors``; 3 when a
    worker died and the table is unfinished (a rerun resumes)."""
    if not launched.main:
        return 0
    if launched.outcome is None:
        if launched.message:
            print_result_lines(launched.message.splitlines())
        return 0
    print_summary(launched.reports, launched.outcome, job.layout.path)
    if launched.died and not launched.outcome.finished:
        return 3
    return check_error_budget(launched.outcome.new_errors, job.settings.max_errors)


@contextmanager
def leaving_on_failure(run: Run) -> Iterator[None]:
    """This process leaves the job however the work ends; a failure first undoes what ``forget``
    undoes, and a write the filesystem refused becomes one line naming the path and the fix."""
    try:
        yield
    except KeyboardInterrupt:  # Ctrl-C: a start that committed nothing leaves nothing either
        forget(run)
        raise
    except Exception as exc:
        forget(run)
        refused = explain_refused_write(exc, run.job.layout.path)
        if refused is not None:
            raise refused from exc
        raise
    finally:
        run.ledger.leave()


def forget(run: Run) -> None:
    """After a failure: a process that joined another's output and committed nothing leaves no
    trace; the main process of a launch that started the job and committed nothing removes it."""
    if run.place.joins:
        if not committed_by(run.ledger):
            run.ledger.depart()
    elif run.main:
        forget_failed_start(run.ledger, run.opening)


def check_error_budget(errors: int, max_errors: int) -> int:
    if max_errors >= 0 and errors > max_errors:
        log.error(
            "%d items could not be embedded, over the budget of %d (tasks.max_errors)",
            errors,
            max_errors,
        )
        return 1
    return 0
