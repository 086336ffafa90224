"""Typed, validated run knobs (the ``tasks`` config group): bad values fail before any model loads."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from img_search.embedding.base import PRECISIONS
from img_search.store.schema import OUTPUT_DTYPES


class ConfigError(ValueError):
    """A configuration problem the user fixes on the command line; reported as one line."""


@dataclass(frozen=True)
class TaskSettings:
    batch_size: int = 32
    #: Loader worker processes for decoding + preprocessing; -1 picks for the machine.
    num_workers: int = -1
    prefetch_factor: int = 2
    precision: str = "fp32"
    output_dtype: str = "float32"
    resume: bool = True
    overwrite: bool = False
    max_image_pixels: int = 178_956_970
    build_retries: int = 3
    build_backoff_s: float = 2.0
    part_rows: int = 200_000
    #: Force CPU even where an accelerator is visible (what ACCELERATE_USE_CPU=1 does).
    cpu: bool = False
    #: Exit non-zero when more items than this fail (-1: never).
    max_errors: int = -1
    #: Longest wait in a collective before a run whose peer died gives up.
    collective_timeout_s: float = 1800.0

    @classmethod
    def from_config(cls, node: DictConfig | dict[str, Any] | None) -> TaskSettings:
        values = (
            OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        )
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown tasks option(s) {unknown}; known: {sorted(known)}")
        for spec in dataclasses.fields(cls):
            if spec.name in values:
                values[spec.name] = _typed(spec.name, values[spec.name], type(spec.default))
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise ConfigError(
                f"tasks.batch_size must be a positive integer, got {self.batch_size!r}"
            )
        if self.num_workers < -1:
            raise ConfigError(
                f"tasks.num_workers must be ≥ 0 (or -1 for auto), got {self.num_workers}"
            )
        if self.prefetch_factor <= 0:
            raise ConfigError(f"tasks.prefetch_factor must be ≥ 1, got {self.prefetch_factor}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"tasks.precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}"
            )
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ConfigError(
                f"tasks.output_dtype must be one of {sorted(OUTPUT_DTYPES)}, got {self.output_dtype!r}"
            )
        if self.collective_timeout_s <= 0:
            raise ConfigError(
                f"tasks.collective_timeout_s must be positive, got {self.collective_timeout_s}"
            )
        if self.part_rows <= 0:
            raise ConfigError(f"tasks.part_rows must be positive, got {self.part_rows}")

    def loader_workers(self, device_type: str, local_processes: int, heavy: bool = True) -> int:
        """Auto: on GPU most cores decode; on CPU one idle-priority worker per core.

        CPU workers run under ``SCHED_IDLE`` (``sharding.yield_to_the_model``), so
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
        cores = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
        per_rank = max(1, cores // max(1, local_processes))
        if device_type == "cuda":
            return min(8, max(1, per_rank - 1))
        return 0 if per_rank < 2 else min(8, per_rank)


def _typed(name: str, value: Any, expected: type) -> Any:
    """Hydra passes what the user typed; refuse ``tasks.batch_size=abc`` with a clear line."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and (expected is bool or not isinstance(value, bool)):
        return value
    article = "an" if expected is int else "a"
    raise ConfigError(f"tasks.{name} must be {article} {expected.__name__}, got {value!r}")
