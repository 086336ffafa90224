"""The run machinery shared by the image and caption pipelines.

validate config (no model loaded) → Accelerator → build datasets, then each
model, on the main process first → per (model, dataset): sharded loader with
preprocessing in workers → batched forward → gather to the main process →
part files → one finished Parquet table → summary.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from img_search.embedding import Encoder, get_encoder
from img_search.faults import fail_point
from img_search.pipeline.distributed import (
    build_everywhere,
    finish,
    gather_step,
    make_accelerator,
    on_main,
)
from img_search.pipeline.reporting import RunStats, make_progress, print_summary
from img_search.pipeline.settings import ConfigError, TaskSettings
from img_search.pipeline.sharding import Collator, ItemSource, RankShard, yield_to_the_model
from img_search.store import EmbeddingTableWriter, read_metadata

log = logging.getLogger(__name__)


@dataclass
class Modality:
    """What differs between pipelines; everything else is shared."""

    #: "image" or "caption": recorded in the metadata.
    kind: str
    #: name, spec → an unbuilt source.
    make_source: Callable[[str, Mapping[str, Any]], ItemSource]
    #: encoder, settings → picklable ``item → features`` run in loader workers.
    make_prepare: Callable[[Encoder, TaskSettings], Callable[[Any], Any]]
    #: encoder → picklable collate of a list of features.
    make_collate: Callable[[Encoder], Callable[[list[Any]], Any]]
    #: encoder, collated features → (n, dim) unit vectors.
    forward: Callable[[Encoder, Any], torch.Tensor]
    #: capability check, e.g. "has an image tower".
    supports: Callable[[Encoder], bool]
    extra_fields: list[pa.Field] = field(default_factory=list)
    #: source, positions → the extra columns of those rows (main process).
    extra_columns: Callable[[Any, list[int]], dict[str, pa.Array]] | None = None
    #: Whether preparing an item is worth loader worker processes by default (decoding is; text is not).
    cpu_heavy_prepare: bool = True


@dataclass
class Job:
    """A validated job: everything constructed, nothing loaded."""

    settings: TaskSettings
    output_path: Path
    encoders: dict[str, Encoder]
    sources: dict[str, ItemSource]
    config: dict[str, Any]
    #: Filled by ``run_job`` on the main process: one entry per (model, dataset) pass.
    stats: list[RunStats] = field(default_factory=list)


def plan_job(cfg: DictConfig, modality: Modality, dataset_specs: Mapping[str, Any]) -> Job:
    """Check everything that can be checked without loading a model; raise ``ConfigError`` early."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"missing value(s): {', '.join(missing)}; set on the command line, e.g. {missing[0]}=..."
        )
    settings = TaskSettings.from_config(cfg.get("tasks"))
    output = cfg.get("output_path")
    if not output:
        raise ConfigError("output_path is not set: add output_path=<file.parquet>")
    output_path = Path(str(output)).expanduser().resolve()
    _check_writable(output_path.parent)
    model_specs = cfg.get("models") or {}
    if not model_specs:
        raise ConfigError("no model selected: add models=<name> (or models=[a,b])")
    if not dataset_specs:
        raise ConfigError("no dataset selected")
    encoders = {}
    for key, spec in model_specs.items():
        encoder = get_encoder(_plain(spec), name=str(key))
        if not modality.supports(encoder):
            raise ConfigError(f"model {key} ({encoder.kind}) cannot embed {modality.kind}s")
        encoders[str(key)] = encoder
    sources = {str(k): modality.make_source(str(k), _plain(v)) for k, v in dataset_specs.items()}
    config = OmegaConf.to_container(cfg, resolve=True)
    return Job(settings, output_path, encoders, sources, config)  # type: ignore[arg-type]


def run_job(job: Job, modality: Modality) -> int:
    """Embed every (model, dataset) of ``job`` into ``job.output_path``; returns the exit code.

    Resumable: rows are committed in part files listed by a manifest; a rerun
    of the same command skips the items those parts hold, whichever process
    died and wherever.
    """
    settings = job.settings
    accelerator = make_accelerator(cpu=settings.cpu, timeout_s=settings.collective_timeout_s)
    main = accelerator.is_main_process
    share_cpu_threads(accelerator)
    writer = None
    if main:
        writer = EmbeddingTableWriter(
            job.output_path,
            output_dtype=settings.output_dtype,
            extra_fields=modality.extra_fields,
            part_rows=settings.part_rows,
        )
    state = on_main(accelerator, lambda: _open_output(job, modality, writer))
    if state == "complete":
        finish(accelerator)
        return 0
    retry = {"retries": settings.build_retries, "backoff": settings.build_backoff_s}
    for name, source in job.sources.items():
        build_everywhere(accelerator, source.build, f"dataset {name}", **retry)
    stats: list[RunStats] = []
    with make_progress(enabled=main) as progress:
        for key, encoder in job.encoders.items():
            if on_main(accelerator, lambda k=key: _model_done(writer, k, job.sources)):
                log.info("model %s: every item was embedded by an earlier run", key)
                continue
            fail_point("model_build")
            build_everywhere(
                accelerator,
                lambda e=encoder: e.load(accelerator.device, settings.precision),
                f"model {key} ({encoder.model_name})",
                **retry,
            )
            on_main(accelerator, lambda k=key, e=encoder: writer.record_identity(k, e.identity()))
            for source in job.sources.values():
                stats.append(
                    embed_source(accelerator, encoder, source, modality, settings, writer, progress)
                )
            _release(encoder, accelerator)
    code = 0
    if main:
        assert writer is not None
        writer.finalize(_metadata(job, modality, writer, accelerator))
        errors_path = writer.errors_path if writer.errors else None
        print_summary(stats, job.output_path, errors_path, sum(p.rows for p in writer.parts))
        job.stats = stats
        code = _check_error_budget(len(writer.errors), settings)
    finish(accelerator)
    return code


def _open_output(job: Job, modality: Modality, writer: EmbeddingTableWriter | None) -> str:
    """Main process: 'complete' (nothing to do), 'resume' or 'fresh'; refuses what must not be overwritten."""
    assert writer is not None
    settings = job.settings
    if job.output_path.exists() and not settings.overwrite:
        if not settings.resume:
            raise ConfigError(
                f"{job.output_path} exists: pass tasks.overwrite=true to replace it "
                "(or tasks.resume=true to keep it)"
            )
        _report_existing(job.output_path)
        return "complete"
    description = describe_job(job, modality)
    if settings.resume and not settings.overwrite and writer.has_partial():
        rows = writer.resume(description)
        log.info("resuming %s: %d rows already done", writer.partial_dir, rows)
        return "resume"
    writer.start(description)
    return "fresh"


def describe_job(job: Job, modality: Modality) -> dict[str, Any]:
    """What the rows of this job are made of, from the config alone (no model loaded)."""
    return {
        "kind": modality.kind,
        "output_dtype": job.settings.output_dtype,
        "models": {
            key: {"encoder": e.kind, "checkpoint": e.model_name, "revision": e.revision}
            for key, e in job.encoders.items()
        },
        "datasets": {name: source.describe() for name, source in job.sources.items()},
    }


def _model_done(
    writer: EmbeddingTableWriter | None, key: str, sources: Mapping[str, ItemSource]
) -> bool:
    """Every dataset's items already written for this model (only known for sized sources)."""
    assert writer is not None
    if key not in writer.identities:
        return False
    for name, source in sources.items():
        total = source.length()
        if total is None or len(writer.done_ids(key, name)) < total:
            return False
    return True


def _metadata(
    job: Job, modality: Modality, writer: EmbeddingTableWriter, accelerator: Accelerator
) -> dict[str, Any]:
    return {
        "kind": modality.kind,
        "models": {key: writer.identities.get(key) for key in job.encoders},
        "datasets": {name: s.describe() for name, s in job.sources.items()},
        "normalized": True,
        "config": job.config,
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_processes": accelerator.num_processes,
    }


def _check_error_budget(errors: int, settings: TaskSettings) -> int:
    if settings.max_errors >= 0 and errors > settings.max_errors:
        log.error(
            "%d items could not be embedded, over the budget of %d (tasks.max_errors)",
            errors,
            settings.max_errors,
        )
        return 1
    return 0


def embed_source(
    accelerator: Accelerator,
    encoder: Encoder,
    source: ItemSource,
    modality: Modality,
    settings: TaskSettings,
    writer: EmbeddingTableWriter | None,
    progress: Any,
) -> RunStats:
    """One (model, dataset) pass. Every rank runs the same number of gather steps."""
    stats = RunStats(encoder.name, source.name)
    done = on_main(accelerator, lambda: writer.done_ids(encoder.name, source.name))
    stats.resumed = len(done)
    workers = settings.loader_workers(
        accelerator.device.type, accelerator.num_processes, modality.cpu_heavy_prepare
    )
    shard = RankShard(
        source,
        modality.make_prepare(encoder, settings),
        Collator(modality.make_collate(encoder)),
        settings.batch_size,
        accelerator.process_index,
        accelerator.num_processes,
        skip_ids=done,
    )
    loader = DataLoader(
        shard,
        batch_size=None,
        num_workers=workers,
        pin_memory=accelerator.device.type == "cuda",
        prefetch_factor=settings.prefetch_factor if workers > 0 else None,
        worker_init_fn=yield_to_the_model if accelerator.device.type == "cpu" else None,
    )
    task = progress.add_task(
        f"{encoder.name} × {source.name}", total=source.length(), completed=len(done), rate=""
    )
    if writer is not None:
        writer.begin_group(encoder.name, source.name)
        _write_failures(writer, source.problems(), source, encoder, stats)
    started = time.perf_counter()
    batches = iter(loader)
    done = False
    while True:
        tick = time.perf_counter()
        batch = None if done else next(batches, None)
        done = batch is None
        got = time.perf_counter()
        vectors = None
        if batch is not None and batch.features is not None:
            vectors = modality.forward(encoder, batch.features)
        forwarded = time.perf_counter()
        step = gather_step(
            accelerator,
            batch.ids if batch else [],
            batch.positions if batch else [],
            vectors,
            batch.failures if batch else [],
            done,
        )
        gathered = time.perf_counter()
        if writer is not None:
            _write_step(writer, step, source, modality, encoder, stats)
            elapsed = time.perf_counter() - started
            processed = stats.rows + stats.errors
            progress.update(
                task,
                completed=processed + stats.resumed,
                rate=f"{processed / max(elapsed, 1e-9):.1f} it/s",
            )
        written = time.perf_counter()
        for stage, seconds in (
            ("wait", got - tick),
            ("forward", forwarded - got),
            ("gather", gathered - forwarded),
            ("write", written - gathered),
        ):
            stats.stages[stage] += seconds
        fail_point("step")
        if step.all_done:
            break
    stats.seconds = time.perf_counter() - started
    return stats


def _write_step(
    writer: EmbeddingTableWriter,
    step: Any,
    source: Any,
    modality: Modality,
    encoder: Encoder,
    stats: RunStats,
) -> None:
    if step.ids:
        extra = (
            modality.extra_columns(source, step.positions.tolist())
            if modality.extra_columns
            else None
        )
        writer.write(step.ids, step.vectors, extra)
        stats.rows += len(step.ids)
    _write_failures(writer, step.failures, source, encoder, stats)


def _write_failures(
    writer: EmbeddingTableWriter,
    failures: list[tuple[str, str]],
    source: Any,
    encoder: Encoder,
    stats: RunStats,
) -> None:
    if not failures:
        return
    writer.add_errors(encoder.name, source.name, failures)
    stats.errors += len(failures)
    for item_id, reason in failures:
        log.warning("skipped %s in %s: %s", item_id, source.name, reason)


def _report_existing(path: Path) -> None:
    try:
        metadata = read_metadata(path)
        rows = metadata.get("rows")
    except Exception:  # not ours, or unreadable: never overwrite it silently
        raise ConfigError(
            f"{path} exists and is not a finished img_search table; "
            "move it away or pass tasks.overwrite=true"
        ) from None
    log.info(
        "%s is already complete (%s rows): nothing to do; tasks.overwrite=true recomputes it",
        path,
        rows,
    )
    print(f"output: {path}")
    print(f"rows: {rows}")


def _release(encoder: Encoder, accelerator: Accelerator) -> None:
    """Free one model's memory before the next model of the job loads."""
    for attribute in ("model", "processor"):
        if hasattr(encoder, attribute):
            setattr(encoder, attribute, None)
    gc.collect()
    if accelerator.device.type == "cuda":
        torch.cuda.empty_cache()


def share_cpu_threads(accelerator: Accelerator) -> None:
    """On CPU, ranks of one machine split its cores instead of each spawning one thread per core."""
    if accelerator.device.type != "cpu" or accelerator.num_processes == 1:
        return
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    torch.set_num_threads(max(1, cores // max(1, local)))


def _check_writable(folder: Path) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ConfigError(f"output directory is not writable: {folder}")
    folder.mkdir(parents=True, exist_ok=True)


def _plain(node: Any) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in (
        "img_search",
        "torch",
        "transformers",
        "accelerate",
        "datasets",
        "pyarrow",
        "pillow",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
