"""One launch of a job in this process: open the output, embed this process's share, finish, summarise.

plan (config only; ``plan.py``) → open the output (main process: the same
job, an append, or a refusal; ``state/output.py``) → every process's share of
the pending pairs (``pairs.py``) → at the end, whoever finds every shard
committed finishes the table (``state/finalize.py``) → summary.

The processes of a launch meet only to build and at the end; processes of
other launches (another machine, a Slurm array task, a Ray worker) share the
same shards through the output's filesystem.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from accelerate import Accelerator

from img_search.pipeline.distributed import (
    finish,
    gather_to_main,
    make_accelerator,
    on_main,
)
from img_search.pipeline.job_progress import JobProgress
from img_search.pipeline.pairs import run_pairs, share_cpu_threads
from img_search.pipeline.plan import Job, spec_fingerprint
from img_search.pipeline.reporting import (
    ProcessReport,
    print_result_lines,
    print_summary,
)
from img_search.pipeline.state.finalize import Outcome, finalize
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.output import Opening, forget_failed_start, open_output
from img_search.store.space import explain_refused_write

log = logging.getLogger(__name__)


def run_job(job: Job) -> int:
    """Embed every (model, dataset) of ``job`` into its output; returns the exit code.

    Exactly once and resumable: a shard counts when its completion record
    says so, whichever process wrote it; a rerun of the same command takes
    over what a stopped process held.
    """
    settings = job.settings
    accelerator = make_accelerator(cpu=settings.cpu, timeout_s=settings.collective_timeout_s)
    share_cpu_threads(accelerator)
    ledger = Ledger(job.layout.state_dir, settings.lease_s)
    opening = on_main(accelerator, lambda: open_output(job, ledger))
    if opening.complete:
        if accelerator.is_main_process and opening.message:
            print_result_lines(opening.message.splitlines())
        finish(accelerator)
        return 0
    if not accelerator.is_main_process:
        ledger.join(spec_fingerprint(job.spec()), opening.launch, accelerator.process_index)
    code = 0

    def forget() -> None:
        if accelerator.is_main_process:
            forget_failed_start(ledger, opening)

    with leaving_on_failure(job, ledger, forget):
        reports, outcome = embed_and_finish(job, accelerator, ledger, opening)
        if accelerator.is_main_process:
            job.report = reports
            print_summary(reports, outcome, job.layout.path)
            code = check_error_budget(outcome.new_errors, settings.max_errors)
    finish(accelerator)
    return code


#: How many times a launch embeds again the shards its finaliser sent back before it gives up
#: (and says to rerun): a part that fails its check twice in a row is not a stale copy.
REDO_ROUNDS = 2


def embed_and_finish(
    job: Job, accelerator: Accelerator, ledger: Ledger, opening: Opening
) -> tuple[list[ProcessReport], Outcome]:
    """Every process's share of the job; then they meet, and the main process finishes the table.

    A shard the finaliser sends back (its record or a part failed a check:
    ``state/finalize.py``) is embedded again by all of them, as in a rerun.
    """
    with JobProgress(ledger, opening.pending, accelerator.is_main_process) as progress:
        reports = gather_to_main(
            accelerator, run_pairs(job, accelerator, ledger, opening, progress)
        )
        progress.poll()  # every rank of this launch is done: its last commits, before the state goes
        outcome = on_main(accelerator, lambda: finalize(job, ledger))
        for _ in range(REDO_ROUNDS):
            if not outcome.redo:
                break
            ledger.update({"done": False})
            redo = replace(opening, pending=outcome.redo)
            again = gather_to_main(accelerator, run_pairs(job, accelerator, ledger, redo, progress))
            for report, more in zip(reports, again, strict=True):
                report.stats.extend(more.stats)
                report.collectives = more.collectives
                report.collective_bytes = more.collective_bytes
            outcome = on_main(accelerator, lambda: finalize(job, ledger))
        progress.end(outcome)
    return reports, outcome


@contextmanager
def leaving_on_failure(job: Job, ledger: Ledger, forget: Callable[[], None]) -> Iterator[None]:
    """This process leaves the job however the work ends; a failure first undoes what ``forget``
    undoes, and a write the filesystem refused becomes one line naming the path and the fix."""
    try:
        yield
    except KeyboardInterrupt:  # Ctrl-C: a start that committed nothing leaves nothing either
        forget()
        raise
    except Exception as exc:
        forget()
        refused = explain_refused_write(exc, job.layout.path)
        if refused is not None:
            raise refused from exc
        raise
    finally:
        ledger.leave()


def check_error_budget(errors: int, max_errors: int) -> int:
    if max_errors >= 0 and errors > max_errors:
        log.error(
            "%d items could not be embedded, over the budget of %d (tasks.max_errors)",
            errors,
            max_errors,
        )
        return 1
    return 0
