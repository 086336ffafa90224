"""``engine=ray``: the job's shards embedded by Ray actors, each one a launch of the command of its own.

The driver (this command) plans the job and opens the output as any launch
does (the same job, an append, or a refusal, exit 2), then starts
``engine.workers`` actors with the CPUs and GPUs asked for. Each actor
composes the same job from the resolved config (``ray_actor.py``), loads
each model once, and claims, embeds and commits shards through the output's
files exactly as an independent launch would (``launch.launch`` in the
actor's ``Place``): the same part files, completion records and errors, and
the same resume. The last actor to finish finishes the table, as the last
launch would. The driver is a launch too, one that claims nothing: it shows
the rows committed so far, waits for every actor, finishes the table if no
actor did, and prints the one summary. The cluster (joining or starting
one, what it holds) is ``ray_cluster.py``.

Nothing but the config (going out) and each actor's report (coming back)
travels through Ray: no vectors, no ids. An actor that dies (killed, out of
memory, its node lost) is named in one line; what it committed stays, and a
rerun with either engine resumes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from img_search.pipeline.engines.ray_actor import EmbedWorker
from img_search.pipeline.engines.ray_cluster import (
    check_resources,
    connect,
    death_reason,
    fitting_workers,
    import_ray,
    is_local,
)
from img_search.pipeline.modalities import Modality
from img_search.pipeline.settings import RayEngine, engine_settings

if TYPE_CHECKING:  # torch comes with the job, once the config is checked
    from img_search.pipeline.launch import Launched, Run
    from img_search.pipeline.plan import Job
    from img_search.pipeline.reporting import ProcessReport
    from img_search.pipeline.state.finalize import Outcome
    from img_search.pipeline.state.ledger import Ledger

log = logging.getLogger("img_search")

#: How often the driver looks whether its actors have returned.
POLL_S = 2.0


@dataclass
class WorkerResult:
    """What one actor did (its launch), or how it died."""

    name: str
    launched: Launched | None = None
    died: str | None = None


def run_on_ray(cfg: DictConfig, modality: Modality, dataset_specs: Mapping[str, Any]) -> int:
    """Embed the job of ``cfg`` with Ray actors; returns the exit code (3: an actor died, unfinished).

    The driver is a launch that claims nothing, on the CPU: it opens the
    output, and its work is to start the actors and wait for them
    (``Actors.work``); it prints the one summary.
    """
    ray = import_ray()  # before the job is planned: without Ray, one line and no model library
    engine = engine_settings(cfg.get("engine"))
    assert isinstance(engine, RayEngine)
    from img_search.pipeline.launch import Place, conclude, launch
    from img_search.pipeline.plan import plain, plan_job

    job = plan_job(cfg, modality, dataset_specs)
    specs = {str(name): plain(spec) for name, spec in dataset_specs.items()}
    actors = Actors(ray, engine, specs)
    launched = launch(job, Place(cpu=True, embeds=False, role="ray driver"), work=actors.work)
    return conclude(replace(launched, died=actors.died), job)


class Actors:
    """The driver's work: a round of actors for the pending pairs (again for shards sent back)."""

    def __init__(self, ray: Any, engine: RayEngine, dataset_specs: dict[str, Any]) -> None:
        self.ray, self.engine, self.dataset_specs = ray, engine, dataset_specs
        self.results: list[WorkerResult] = []
        self.last: list[WorkerResult] = []

    @property
    def died(self) -> list[str]:
        return [r.name for r in self.results if r.died]

    def work(self, run: Run) -> tuple[list[ProcessReport], Outcome]:
        from img_search.pipeline.launch import rounds
        from img_search.pipeline.reporting import ProcessReport
        from img_search.pipeline.state.finalize import finalize

        def embed(pending: list[tuple[str, str]]) -> list[ProcessReport]:
            self.last = run_workers(
                self.ray, self.engine, run.job, self.dataset_specs, run.ledger, pending
            )
            self.results += self.last
            return [report for r in self.last if r.launched for report in r.launched.reports]

        def finish() -> Outcome:
            """An actor that finished the table says so; else the driver tries (none finished it)."""
            ends = [r.launched.outcome for r in self.last if r.launched and r.launched.outcome]
            finished = [outcome for outcome in ends if outcome.finished]
            return finished[0] if finished else finalize(run.job, run.ledger)

        me = ProcessReport(0, run.ledger.me.id if run.ledger.me else "", role=run.place.role or "")
        reports, outcome = rounds(run, embed, finish)
        return [me, *reports], outcome


def run_workers(
    ray: Any,
    engine: RayEngine,
    job: Job,
    dataset_specs: dict[str, Any],
    ledger: Ledger,
    pending: list[tuple[str, str]],
) -> list[WorkerResult]:
    """Start the actors, let each embed its share, and collect what each did (none: nothing pending)."""
    if not pending:  # every shard is committed: only the table is left to write
        return []
    started = connect(ray, engine)
    actors: list[Any] = []
    try:
        count = engine.workers or fitting_workers(ray.cluster_resources(), engine)
        check_resources(ray.cluster_resources(), engine, count, local=is_local(engine))
        config = {**job.config, "output_path": str(job.layout.path)}
        actor = ray.remote(EmbedWorker).options(
            num_cpus=engine.num_cpus_per_worker, num_gpus=engine.num_gpus_per_worker
        )
        actors = [
            actor.remote(i, count, config, job.modality.kind, dataset_specs, os.getcwd(), engine)
            for i in range(count)
        ]
        names = [f"ray worker {i + 1} of {count}" for i in range(count)]
        # every actor composes the job (imports, encoders) before any of them claims a shard
        places = settle(ray, [a.ready.remote() for a in actors], names)
        results = [
            WorkerResult(n, died=p.died) for n, p in zip(names, places, strict=True) if p.died
        ]
        live = [
            (a, f"{n} ({p.value})")
            for a, n, p in zip(actors, names, places, strict=True)
            if not p.died
        ]
        refs = [a.run.remote() for a, _ in live]
        show_progress(ray, refs, ledger, pending)
        for (_, name), done in zip(live, settle(ray, refs, [n for _, n in live]), strict=True):
            results.append(WorkerResult(name, done.value, done.died))
        return results
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


@dataclass
class Settled:
    value: Any = None
    died: str | None = None


def settle(ray: Any, refs: list[Any], names: list[str]) -> list[Settled]:
    """Wait for every call; a dead actor is one log line, an exception raised in one is raised here.

    The exception is the actor's own (``ConfigError``, ``BuildError`` …), so a
    user error is the usual one line and exit code 2.
    """
    from ray.exceptions import RayActorError, RayTaskError

    settled, errors = [], []
    for ref, name in zip(refs, names, strict=True):
        try:
            settled.append(Settled(ray.get(ref)))
        except RayActorError as exc:
            why = death_reason(exc)
            log.error(
                "%s died (%s); the shards it committed are kept: rerun (engine=ray or local) to resume",
                name,
                why,
            )
            settled.append(Settled(died=why))
        except RayTaskError as exc:
            errors.append(exc.cause if isinstance(exc.cause, Exception) else exc)
            settled.append(Settled())
    if errors:
        raise errors[0]
    return settled


def show_progress(
    ray: Any, refs: list[Any], ledger: Ledger, pending: list[tuple[str, str]]
) -> None:
    """Wait for every actor to return; meanwhile the driver's ``JobProgress`` (``launch.Run.progress``)
    shows each pair's committed items, read from its completion records."""
    waiting = list(refs)
    while waiting:
        _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=POLL_S)
