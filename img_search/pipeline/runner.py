"""The run machinery shared by the image and caption pipelines.

plan (config only; ``plan.py``) → open the output (main process: the same
job, an append, or a refusal; ``output.py``) → build the datasets, then each
model, on the main process first → for each (model, dataset) still to do,
every process claims shards, embeds them and commits them itself
(``claims.py``, ``shards.py``, ``commit.py``) → at the end, whoever finds
every shard committed finishes the table (``finalize.py``) → summary.

The processes of a launch meet only to build and at the end; processes of
other launches (another machine, a Slurm array task, a Ray worker) share the
same shards through the output's filesystem.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from img_search.data.base import BuildContext, EmptyDataset
from img_search.embedding import Encoder
from img_search.faults import fail_point
from img_search.host import usable_cores
from img_search.pipeline.claims import PairClaims
from img_search.pipeline.commit import ShardCommitter
from img_search.pipeline.distributed import (
    COUNT,
    build_everywhere,
    finish,
    gather_to_main,
    local_world_size,
    make_accelerator,
    on_main,
)
from img_search.pipeline.engines import start_slot
from img_search.pipeline.finalize import Outcome, finalize, pair_claims
from img_search.pipeline.job_progress import JobProgress
from img_search.pipeline.ledger import Ledger
from img_search.pipeline.loader import PassLoader
from img_search.pipeline.output import JobMismatch, Opening, forget_failed_start, open_output
from img_search.pipeline.plan import Job, plan_job, spec_fingerprint
from img_search.pipeline.reporting import (
    ProcessReport,
    RunStats,
    print_result_lines,
    print_summary,
)
from img_search.pipeline.shards import Feeder
from img_search.store import PartWriter
from img_search.store.space import explain_refused_write

log = logging.getLogger(__name__)
__all__ = ["embed_and_finish", "embed_source", "plan_job", "run_job"]


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
    ``finalize.py``) is embedded again by all of them, as in a rerun.
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


def run_pairs(
    job: Job, accelerator: Accelerator, ledger: Ledger, opening: Opening, progress: JobProgress
) -> ProcessReport:
    """This process's share of every pending (model, dataset) pair (``progress``: the job's bars
    or lines, shown by the main process)."""
    settings = job.settings
    retry = {"retries": settings.build_retries, "backoff": settings.build_backoff_s}
    report = ProcessReport(accelerator.process_index, ledger.me.id if ledger.me else "")
    datasets = list(dict.fromkeys(d for _, d in opening.pending))
    for name in datasets:
        source = job.sources[name]
        source.context = build_context(job, accelerator, ledger, name)
        build_everywhere(
            accelerator,
            source.build,
            f"dataset {name}",
            together=source.builds_together,
            local_copy=job.modality.local_copy(name),
            **retry,
        )
    layouts = on_main(accelerator, lambda: agree_on_listings(job, ledger, datasets))
    for key, encoder in job.encoders.items():
        names = [d for m, d in opening.pending if m == key]
        if not names:
            continue
        fail_point("model_build")
        build_everywhere(
            accelerator,
            lambda e=encoder: e.load(accelerator.device, settings.precision, job.trust_remote_code),
            f"model {key} ({encoder.model_name})",
            local_copy=f"models.{key}.model_name=<local folder>",
            **retry,
        )
        resumed = on_main(accelerator, lambda e=encoder, n=names: agree_on_model(ledger, e, n))
        for name in names:
            stats = embed_source(
                accelerator,
                encoder,
                job.sources[name],
                job,
                ledger,
                layouts[name],
                progress,
            )
            stats.resumed = resumed[name]
            report.stats.append(stats)
            ledger.update({"passes": [s.as_dict() for s in report.stats]})
        release(encoder, accelerator)
    report.collectives, report.collective_bytes = COUNT.calls, COUNT.bytes
    # "done" last: a finaliser of another launch waits for live processes without it
    ledger.update({"collectives": COUNT.calls, "collective_bytes": COUNT.bytes, "done": True})
    return report


def build_context(job: Job, accelerator: Accelerator, ledger: Ledger, name: str) -> BuildContext:
    """What building dataset ``name`` may share: a folder of the job's state, this process's place
    among all that may work on the job, and its share of the machine's cores."""
    slot, slots = start_slot(accelerator.process_index, accelerator.num_processes)
    cores = job.cores if job.cores is not None else usable_cores() / local_world_size(accelerator)
    return BuildContext(ledger.path("built", name), slot, slots, max(1, int(cores)))


def embed_source(
    accelerator: Accelerator,
    encoder: Encoder,
    source: Any,
    job: Job,
    ledger: Ledger,
    layout: tuple[int, int],
    progress: JobProgress,
) -> RunStats:
    """One (model, dataset) pass of this process: claim a shard, embed it, commit it, until none is left."""
    stats = RunStats(encoder.name, source.name, rank=accelerator.process_index)
    shards = source.shards(*layout)
    slot, slots = start_slot(accelerator.process_index, accelerator.num_processes)
    claims = PairClaims(ledger, encoder.name, source.name, shards, slot, slots)
    feeder = Feeder(claims.claim_next, job.settings.batch_size)
    loader = PassLoader(job, encoder, source, feeder, accelerator)
    committer = ShardCommitter(
        claims, part_writers(job, encoder, source), job.settings.commit_every_s, source.problems()
    )
    progress.start(encoder.name, source.name, source.length())
    clock = StageClock(stats)
    try:
        for batch in clock.each(loader, "wait"):
            with clock("forward"):
                vectors = forward(job, encoder, batch)
            with clock("write"):
                k = batch.task
                extra = extra_columns(job, source, batch)
                committer.add(k, feeder.tasks[k], len(feeder.windows[k]), batch, vectors, extra)
            shard, opened = feeder.tasks[k].shard, committer.open.get(k)
            done = opened.record.positions_done if opened else shard.stop - shard.start
            progress.note(encoder.name, source.name, shard.index, done)
            fail_point("step")
    finally:
        committer.close()
    stats.seconds = clock.elapsed()
    stats.rows, stats.errors = committer.stats.rows, committer.stats.errors
    stats.shards, stats.commits = committer.stats.shards, committer.stats.commits
    return stats


def part_writers(job: Job, encoder: Encoder, source: Any) -> Any:
    """Part file name → a ``PartWriter`` of this pair (plain-list vectors in a folder table)."""

    def make(name: str) -> PartWriter:
        job.layout.parts_dir.mkdir(parents=True, exist_ok=True)
        return PartWriter(
            job.layout.parts_dir / name,
            encoder.name,
            source.name,
            output_dtype=job.settings.output_dtype,
            extra_fields=job.modality.extra_fields,
            fixed_size=not job.layout.is_folder,
        )

    return make


def forward(job: Job, encoder: Encoder, batch: Any) -> np.ndarray | None:
    from img_search.pipeline.gpu_decode import decode_on_device

    decode_on_device(batch, encoder, job.settings.max_image_pixels)  # tasks.decode=gpu's JPEGs
    if batch.features is None:
        return None
    return job.modality.forward(encoder, batch.features).float().cpu().numpy()


def extra_columns(job: Job, source: Any, batch: Any) -> dict[str, Any] | None:
    if job.modality.extra_columns is None or not batch.ids:
        return None
    return job.modality.extra_columns(source, batch.positions)


class StageClock:
    """Seconds per stage (waiting for data, forward, writing), so a slow stage shows in the summary."""

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        tick = time.perf_counter()
        yield
        self.stats.stages[stage] += time.perf_counter() - tick

    def each(self, iterable: Any, stage: str) -> Iterator[Any]:
        iterator = iter(iterable)
        while True:
            with self(stage):
                item = next(iterator, None)
            if item is None:
                return
            yield item


def agree_on_listings(job: Job, ledger: Ledger, names: list[str]) -> dict[str, tuple[int, int]]:
    """Main process: every dataset lists the items the job started with; returns each one's shard layout.

    The layout (shard size, and the batch size its tail shrinks to) is the
    one the job started with, whatever this run's settings say.
    """
    settings, layouts = job.settings, {}
    for name in names:
        source = job.sources[name]
        items, fingerprint = source.listing()
        if items == 0:
            raise EmptyDataset(
                f"dataset {name} holds no items (after its filters, if any: ids, ids_file, "
                "splits, dedupe): nothing to embed"
            )
        size = settings.shard_size_for(items)
        value = {
            "items": items,
            "fingerprint": fingerprint,
            "shard_size": size,
            "tail_unit": settings.batch_size,
            "shards": len(source.shards(size, settings.batch_size)),
        }
        agreed = ledger.agree(f"listing-{name}", value)
        if (agreed.get("items"), agreed.get("fingerprint")) != (items, fingerprint):
            raise JobMismatch(
                f"datasets.{name}: the items differ from those this output was started with "
                f"({agreed.get('items')} items then, {items} now, or the same number but other "
                "ids); rerun on the same data, or pass tasks.overwrite=true to start over"
            )
        if settings.shard_size is not None and settings.shard_size != agreed["shard_size"]:
            log.warning(
                "datasets.%s keeps the shard size it started with (%d), not tasks.shard_size=%d",
                name,
                agreed["shard_size"],
                settings.shard_size,
            )
        # a job started before shards had a tail has none
        layouts[name] = (int(agreed["shard_size"]), int(agreed.get("tail_unit", 0)))
    return layouts


def agree_on_model(ledger: Ledger, encoder: Encoder, datasets: list[str]) -> dict[str, int]:
    """Main process: the loaded model preprocesses as the job's first one did; rows already committed."""
    identity = encoder.identity()
    agreed = ledger.agree(f"identity-{encoder.name}", identity)
    if agreed.get("fingerprint") != identity.get("fingerprint"):
        changed = sorted(
            k
            for k in set(agreed) | set(identity)
            if agreed.get(k) != identity.get(k) and k not in ("fingerprint", "dim", "precision")
        )
        raise JobMismatch(
            f"model {encoder.name} differs from the one that started this output "
            f"({', '.join(changed) or 'fingerprint'} changed); pass tasks.overwrite=true to start over"
        )
    return {name: pair_claims(ledger, encoder.name, name).committed_rows() for name in datasets}


def check_error_budget(errors: int, max_errors: int) -> int:
    if max_errors >= 0 and errors > max_errors:
        log.error(
            "%d items could not be embedded, over the budget of %d (tasks.max_errors)",
            errors,
            max_errors,
        )
        return 1
    return 0


def release(encoder: Encoder, accelerator: Accelerator) -> None:
    """Free one model's memory before the next model of the job loads."""
    for attribute in ("model", "processor"):
        if hasattr(encoder, attribute):
            setattr(encoder, attribute, None)
    gc.collect()
    if accelerator.device.type == "cuda":
        torch.cuda.empty_cache()


def share_cpu_threads(accelerator: Accelerator) -> None:
    """On CPU, processes of one machine split its cores instead of each spawning one thread per core."""
    local = local_world_size(accelerator)
    if accelerator.device.type != "cpu" or local == 1:
        return
    torch.set_num_threads(max(1, usable_cores() // local))
