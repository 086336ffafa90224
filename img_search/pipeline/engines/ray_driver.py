"""``engine=ray``: the job's shards embedded by Ray actors, each one a launch of the command of its own.

The driver (this command) plans the job and opens the output as any launch
does (the same job, an append, or a refusal, exit 2), then starts
``engine.workers`` actors with the CPUs and GPUs asked for. Each actor
composes the same job from the resolved config, loads each model once, and
claims, embeds and commits shards through the output's files exactly as an
independent launch would (``pairs.run_pairs``): the same part files,
completion records and errors, and the same resume. The last actor to finish
finishes the table, as the last launch would. The driver shows the rows
committed so far, waits for every actor, finishes the table if no actor did,
and prints the one summary.

Nothing but the config (going out) and each actor's report (coming back)
travels through Ray: no vectors, no ids. An actor that dies (killed, out of
memory, its node lost) is named in one line; what it committed stays, and a
rerun with either engine resumes.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from img_search.failures import first_line
from img_search.host import usable_cores
from img_search.pipeline.engines.slurm import ENGINE_SLOT
from img_search.pipeline.modalities import MODALITIES, Modality
from img_search.pipeline.settings import ConfigError, RayEngine, engine_settings

if TYPE_CHECKING:  # torch comes with the job, once the config is checked
    from img_search.pipeline.plan import Job
    from img_search.pipeline.reporting import ProcessReport
    from img_search.pipeline.state.finalize import Outcome
    from img_search.pipeline.state.ledger import Ledger

log = logging.getLogger("img_search")

MISSING_RAY = "engine=ray needs Ray: pip install 'img_search[ray]'"
#: The object store of a Ray instance started here: only configs and reports go through it.
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20
#: How often the driver looks whether its actors have returned.
POLL_S = 2.0


@dataclass
class WorkerResult:
    """What one actor did: its report and what it found at the end, or how it died."""

    name: str
    report: ProcessReport | None = None
    outcome: Outcome | None = None
    died: str | None = None


def run_on_ray(cfg: DictConfig, modality: Modality, dataset_specs: Mapping[str, Any]) -> int:
    """Embed the job of ``cfg`` with Ray actors; returns the exit code (3: an actor died, unfinished)."""
    ray = import_ray()
    engine = engine_settings(cfg.get("engine"))
    assert isinstance(engine, RayEngine)
    from img_search.pipeline.job_progress import JobProgress
    from img_search.pipeline.launch import check_error_budget, leaving_on_failure
    from img_search.pipeline.plan import plain, plan_job
    from img_search.pipeline.reporting import ProcessReport, print_result_lines, print_summary
    from img_search.pipeline.state.claims import pair_claims
    from img_search.pipeline.state.finalize import finalize
    from img_search.pipeline.state.ledger import Ledger
    from img_search.pipeline.state.output import forget_failed_start, open_output

    job = plan_job(cfg, modality, dataset_specs)
    ledger = Ledger(job.layout.state_dir, job.settings.lease_s)
    opening = open_output(job, ledger)
    if opening.complete:
        if opening.message:
            print_result_lines(opening.message.splitlines())
        return 0
    # the driver claims no shard: "done" from the start, so that the last actor finishes the table
    ledger.update({"done": True, "role": "ray driver"})
    driver = ProcessReport(0, ledger.me.id if ledger.me else "", role="ray driver")
    with (
        leaving_on_failure(job, ledger, lambda: forget_failed_start(ledger, opening)),
        JobProgress(ledger, opening.pending, enabled=True) as progress,
    ):
        resumed = {pair: pair_claims(ledger, *pair).committed_rows() for pair in opening.pending}
        specs = {str(name): plain(spec) for name, spec in dataset_specs.items()}
        results = run_workers(ray, engine, job, specs, ledger, opening.pending)
        reports = [r.report for r in results if r.report is not None]
        for stats in (s for report in reports for s in report.stats):
            stats.resumed = resumed.get((stats.model_name, stats.dataset_name), 0)
        finished = [r.outcome for r in results if r.outcome is not None and r.outcome.finished]
        outcome = finished[0] if finished else finalize(job, ledger)
        if outcome.redo:  # a part failed its check once every actor had stopped: once more
            results += run_workers(ray, engine, job, specs, ledger, outcome.redo)
            reports = [r.report for r in results if r.report is not None]
            finished = [r.outcome for r in results if r.outcome and r.outcome.finished]
            outcome = finished[0] if finished else finalize(job, ledger)
        progress.end(outcome)
    print_summary([driver, *reports], outcome, job.layout.path)
    if any(r.died for r in results) and not outcome.finished:
        return 3
    return check_error_budget(outcome.new_errors, job.settings.max_errors)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(MISSING_RAY) from None
    return ray


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
            results.append(WorkerResult(name, died=done.died) if done.died else done.value)
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
    """Wait for every actor to return; meanwhile the driver's ``JobProgress`` (``run_on_ray``)
    shows each pair's committed items, read from its completion records."""
    waiting = list(refs)
    while waiting:
        _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=POLL_S)


def is_local(engine: RayEngine) -> bool:
    return engine.address in (None, "local")


def connect(ray: Any, engine: RayEngine) -> bool:
    """Join the cluster ``engine.address`` names, or start one here; True if this call did (and so
    must shut it down). A Ray already initialised in this process (a Python caller's) is used as it is.
    """
    if ray.is_initialized():
        return False
    if not sys.stderr.isatty():  # the prefixes of the actors' lines, in a log file
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if is_local(engine):
        # enough CPUs for the workers asked for, even beyond the cores: they would wait forever
        needed = math.ceil((engine.workers or 1) * engine.num_cpus_per_worker)
        ray.init(
            address="local",
            num_cpus=max(usable_cores(), needed),
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            logging_level=logging.ERROR,  # not its advice on clusters (token authentication …)
        )
        return True
    try:
        ray.init(address=engine.address, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise ConfigError(
            f"engine.address={engine.address}: {first_line(exc).rstrip('.')}; start a cluster (ray start "
            "--head) or pass engine.address=local to start one in this process"
        ) from None
    return True


def fitting_workers(resources: Mapping[str, float], engine: RayEngine) -> int:
    """``engine.workers=null``: as many actors as the cluster's GPUs (or CPUs) hold now."""
    fits = [resources.get("CPU", 0.0) / engine.num_cpus_per_worker]
    if engine.num_gpus_per_worker > 0:
        fits.append(resources.get("GPU", 0.0) / engine.num_gpus_per_worker)
    count = math.floor(min(fits) + 1e-9)
    if count < 1:
        raise ConfigError(
            f"engine.workers=null: the Ray cluster holds no worker of {engine.num_cpus_per_worker:g} "
            f"CPU(s) and {engine.num_gpus_per_worker:g} GPU(s) now ({format_resources(resources)}); "
            "set engine.workers"
        )
    log.info(
        "engine.workers=null: %d ray workers fit the cluster (%s)",
        count,
        format_resources(resources),
    )
    return count


def check_resources(
    resources: Mapping[str, float], engine: RayEngine, count: int, local: bool
) -> None:
    """Refuse workers a Ray started here can never hold; a cluster's autoscaler may still add nodes."""
    need = {"CPU": count * engine.num_cpus_per_worker, "GPU": count * engine.num_gpus_per_worker}
    short = {k: v for k, v in need.items() if v > resources.get(k, 0.0) + 1e-9}
    if not short:
        return
    text = ", ".join(f"{v:g} {k}s" for k, v in short.items())
    has = format_resources(resources)
    if local:
        raise ConfigError(
            f"{count} ray workers need {text} and this machine has {has}: lower engine.workers "
            "or engine.num_gpus_per_worker"
        )
    log.warning(
        "%d ray workers need %s and the cluster has %s now: some wait for more", count, text, has
    )


def format_resources(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0.0):g} {k}s" for k in ("CPU", "GPU"))


def death_reason(exc: BaseException) -> str:
    """Ray's first line, and its exit type where it says (``SYSTEM_ERROR``: killed, crashed, OOM)."""
    text, why = str(exc), first_line(exc).rstrip(".")
    if "Worker exit type: " in text:
        why += ", " + text.split("Worker exit type: ", 1)[1].split()[0]
    return why


class EmbedWorker:
    """A Ray actor: one process that embeds the job's shards as a launch of the command would."""

    def __init__(
        self,
        index: int,
        count: int,
        config: dict[str, Any],
        kind: str,
        dataset_specs: dict[str, Any],
        cwd: str,
        engine: RayEngine,
    ) -> None:
        self.index, self.name = index, f"ray worker {index + 1} of {count}"
        os.environ[ENGINE_SLOT] = f"{index}/{count}"  # workers start on their own stretches
        self.config, self.kind, self.dataset_specs = config, kind, dataset_specs
        self.cwd, self.engine = cwd, engine
        self.job: Job | None = None

    def ready(self) -> str:
        """Compose the job from the resolved config (torch and the encoder classes load here)."""
        from omegaconf import OmegaConf
        from transformers.utils import logging as hf_logging

        from img_search.console import console, setup_logging
        from img_search.host import HOST
        from img_search.pipeline.plan import plan_job

        setup_logging(str((self.config.get("logging") or {}).get("level", "INFO")), is_main=False)
        console.quiet = True  # progress bars and the summary are the driver's
        hf_logging.disable_progress_bar()  # "Loading weights", once per actor
        if os.path.isdir(self.cwd):  # relative paths in the config mean what they mean there
            os.chdir(self.cwd)
        else:
            log.warning(
                "%s: %s is not on %s: relative dataset paths are read from %s",
                self.name,
                self.cwd,
                HOST,
                os.getcwd(),
            )
        modality = MODALITIES[self.kind]
        self.job = plan_job(OmegaConf.create(self.config), modality, self.dataset_specs)
        return f"host {HOST}, pid {os.getpid()}"

    def run(self) -> WorkerResult:
        assert self.job is not None
        return embed_share(self.job, self.index, self.name, self.engine)


def embed_share(job: Job, index: int, name: str, engine: RayEngine) -> WorkerResult:
    """Inside an actor: this process's share of the job, then an attempt to finish the table."""
    import torch

    from img_search.pipeline.distributed import finish, make_accelerator
    from img_search.pipeline.launch import embed_and_finish, leaving_on_failure
    from img_search.pipeline.state.claims import committed_by
    from img_search.pipeline.state.ledger import Ledger
    from img_search.pipeline.state.output import open_output

    settings = job.settings
    # the driver has opened the output (overwrite, resume): the actors join the job it left there
    settings.overwrite, settings.resume = False, True
    settings.cpu = settings.cpu or engine.num_gpus_per_worker == 0
    accelerator = make_accelerator(cpu=settings.cpu, timeout_s=settings.collective_timeout_s)
    cpus = engine.num_cpus_per_worker
    job.cores = cpus
    torch.set_num_threads(max(1, int(cpus)))
    heavy = job.modality.cpu_heavy_prepare
    settings.num_workers = settings.loader_workers(accelerator.device.type, 1, heavy, cores=cpus)
    ledger = Ledger(job.layout.state_dir, settings.lease_s)
    opening = open_output(job, ledger)
    if opening.complete:  # finished by others meanwhile
        return WorkerResult(name)
    ledger.update({"role": name})

    def forget() -> None:
        if not committed_by(ledger):
            ledger.depart()  # a process that did nothing here leaves no trace

    with leaving_on_failure(job, ledger, forget):
        (report,), outcome = embed_and_finish(job, accelerator, ledger, opening)
    finish(accelerator)
    report.rank, report.role = index, name
    return WorkerResult(name, report, outcome)
