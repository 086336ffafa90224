"""The ``tasks`` and ``engine`` config groups as Hydra structured configs: one dataclass each is the defaults, the types and the checks.

``TaskSettings`` is registered in Hydra's ConfigStore as ``tasks/default`` (``config_store``),
and ``LocalEngine`` / ``RayEngine`` as ``engine/local`` / ``engine/ray``, so
Hydra itself refuses ``tasks.batch_size=abc``, an unknown ``tasks.option`` or
``engine=spark`` while composing, and ``__post_init__`` refuses values of the
right type that make no sense (``tasks.batch_size=0``) before any model loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from img_search.failures import ConfigError
from img_search.host import usable_cores

PRECISION_NAMES = ("fp32", "fp16", "bf16")
DECODERS = ("cpu", "gpu")
T = TypeVar("T")

#: Auto shard size: about 64 shards, each between these sizes.
AUTO_SHARD_MIN, AUTO_SHARD_MAX, AUTO_SHARDS = 256, 10_000, 64


@dataclass
class TaskSettings:
    #: Items per forward pass.
    batch_size: int = 32
    #: Loader worker processes for decoding + preprocessing; -1 picks for the machine.
    num_workers: int = -1
    prefetch_factor: int = 2
    #: fp32 | fp16 | bf16 (autocast on the device).
    precision: str = "fp32"
    #: float32 | float16 in the table.
    output_dtype: str = "float32"
    #: Continue an interrupted job, or add the new models/datasets to a finished table.
    resume: bool = True
    #: Delete what is at the output (and its job state) and start over.
    overwrite: bool = False
    #: Decompression-bomb guard: larger images are skipped and reported.
    max_image_pixels: int = 178_956_970
    #: Where images are decoded: cpu (PIL in loader workers) | gpu (JPEGs on the model's
    #: device, in batches: ``pipeline.gpu_decode``).
    decode: str = "cpu"
    build_retries: int = 3
    build_backoff_s: float = 2.0
    #: Items per shard of a random-access source; null: about 64 shards of 256 to 10,000 items
    #: (whole batches).
    #: (A multi-file streaming source has one shard per file.)
    shard_size: int | None = None
    #: A shard still being embedded is also committed this often, so a crash loses at most this much.
    commit_every_s: float = 300.0
    #: A process whose heartbeat is older than this is presumed dead and its shards are taken over.
    #: (On the same machine a dead process is recognised at once.)
    lease_s: float = 120.0
    #: Force CPU even where an accelerator is visible (what ACCELERATE_USE_CPU=1 does).
    cpu: bool = False
    #: Exit non-zero when more items than this fail (-1: never); the table is written either way.
    max_errors: int = -1
    #: Longest wait in a collective before a run whose peer died gives up.
    collective_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        from img_search.store.schema import OUTPUT_DTYPES  # pyarrow: not needed to compose a config

        checks = [
            (self.batch_size > 0, "tasks.batch_size must be a positive integer"),
            (self.num_workers >= -1, "tasks.num_workers must be ≥ 0 (or -1 for auto)"),
            (self.prefetch_factor > 0, "tasks.prefetch_factor must be ≥ 1"),
            (
                self.precision in PRECISION_NAMES,
                f"tasks.precision must be one of {sorted(PRECISION_NAMES)}",
            ),
            (
                self.output_dtype in OUTPUT_DTYPES,
                f"tasks.output_dtype must be one of {sorted(OUTPUT_DTYPES)}",
            ),
            (self.decode in DECODERS, f"tasks.decode must be one of {list(DECODERS)}"),
            (self.shard_size is None or self.shard_size > 0, "tasks.shard_size must be positive"),
            (self.commit_every_s > 0, "tasks.commit_every_s must be positive"),
            (self.lease_s > 0, "tasks.lease_s must be positive"),
            (self.collective_timeout_s > 0, "tasks.collective_timeout_s must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                name = message.split()[0]
                value = getattr(self, name.removeprefix("tasks."))
                raise ConfigError(f"{message}, got {value!r}")

    @classmethod
    def from_config(cls, node: DictConfig | dict[str, Any] | None) -> TaskSettings:
        """The validated settings of a composed ``tasks`` node (or a plain dict, for the Python API)."""
        return validated(cls, node, "tasks")

    def shard_size_for(self, items: int) -> int:
        """The shard size of a source of ``items`` items: as set, or about 64 shards.

        Never from the number of processes, so the same listing gives the same
        shards however many run it. Auto sizes are whole batches: a shard's last
        batch is not a small one that costs a full forward pass.
        """
        if self.shard_size is not None:
            return self.shard_size
        size = min(AUTO_SHARD_MAX, max(AUTO_SHARD_MIN, math.ceil(items / AUTO_SHARDS)))
        return math.ceil(size / self.batch_size) * self.batch_size

    def loader_workers(
        self, device_type: str, local_processes: int, heavy: bool = True, cores: float | None = None
    ) -> int:
        """Auto: on GPU most cores decode; on CPU one idle-priority worker per core.

        ``local_processes`` is the number of processes of this job on this
        machine (not the job's world size: on two 8-GPU machines each GPU's
        process gets 1/8 of its own machine's cores). ``cores``, when given,
        is this process's own allotment instead (a Ray worker's
        ``engine.num_cpus_per_worker``), whatever the machine has.

        CPU workers run under ``SCHED_IDLE`` (``shards.yield_to_the_model``), so
        they take only the time the model's threads leave and never slow the
        forward pass; one per core lets them catch up in parallel when they fall
        behind. Measured on 2 cores (EfficientNet-Lite0): 1 normal worker
        0.80-0.88 of model-only, 2 idle-priority workers 0.93-0.97.

        Items that are cheap to prepare (caption strings) get no worker processes.
        """
        if self.num_workers >= 0:
            return self.num_workers
        if not heavy:
            return 0
        if cores is not None:
            per_rank = max(1, int(cores))
        else:
            per_rank = max(1, usable_cores() // max(1, local_processes))
        if device_type == "cuda":
            return min(8, max(1, per_rank - 1))
        return 0 if per_rank < 2 else min(8, per_rank)


@dataclass
class LocalEngine:
    """``engine=local`` (the default): this command's own processes — one, or the ranks of
    ``accelerate launch`` / ``torchrun`` — and any other launch of it on the same output."""

    kind: str = "local"


@dataclass
class RayEngine:
    """``engine=ray``: ``workers`` Ray actors, each embedding shards as a launch of its own would."""

    kind: str = "ray"
    #: ``auto``: the running cluster (``RAY_ADDRESS``, or the one ``ray start`` started here);
    #: ``ray://host:10001`` or ``host:6379``: that one; ``local`` or null: start one in this process.
    address: str | None = "auto"
    #: Ray actors (one model copy each); null: as many as the cluster's GPUs and CPUs hold
    #: when the run starts.
    workers: int | None = None
    #: GPUs per actor: 1 is typical; 0 on a CPU-only cluster; a fraction shares a GPU.
    num_gpus_per_worker: float = 0.0
    #: CPUs per actor: its torch threads and its loader workers (``tasks.num_workers=-1``).
    num_cpus_per_worker: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.workers is None or self.workers > 0, "engine.workers must be positive or null"),
            (self.num_gpus_per_worker >= 0, "engine.num_gpus_per_worker must be ≥ 0"),
            (self.num_cpus_per_worker > 0, "engine.num_cpus_per_worker must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                value = getattr(self, message.split()[0].removeprefix("engine."))
                raise ConfigError(f"{message}, got {value!r}")


ENGINES: dict[str, type] = {"local": LocalEngine, "ray": RayEngine}


def engine_settings(node: DictConfig | dict[str, Any] | None) -> LocalEngine | RayEngine:
    """The validated ``engine`` node; no node (a config made in Python) is ``engine=local``."""
    kind = str((node or {}).get("kind", "local"))
    if kind not in ENGINES:
        raise ConfigError(f"unknown engine.kind {kind!r}; the engines are: {', '.join(ENGINES)}")
    return validated(ENGINES[kind], node, "engine")


def validated(cls: type[T], node: DictConfig | dict[str, Any] | None, group: str) -> T:
    """An instance of the structured config ``cls`` from a composed node or a plain dict."""
    if isinstance(node, DictConfig):
        try:
            merged = OmegaConf.merge(OmegaConf.structured(cls), node)
        except ValidationError as exc:
            raise ConfigError(f"{group}.{exc.full_key}: {exc.msg}") from None
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    values = dict(node or {})
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {group} option(s) {unknown}; known: {sorted(fields)}")
    return cls(**values)
