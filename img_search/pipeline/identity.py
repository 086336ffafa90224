"""Which options say what a table's rows are (its job identity), and which only where and how fast a job runs.

Every option a model or a dataset receives is part of the identity (the
spec each one is built from, defaults included), and so are the ``tasks``
options of ``IDENTITY_TASK_OPTIONS``. The options of ``RUNTIME_OPTIONS`` are
not: changing one between two launches of a job changes neither which rows
exist nor their vectors, so a resume or an append accepts it. Any other
option is unclassified, which ``tests/pipeline/test_identity_audit.py``
refuses: a new option is put in one list or the other, with its reason.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

#: Options that change where and how fast a job runs, never its rows: pattern → why.
RUNTIME_OPTIONS: dict[str, str] = {
    "output_path": "where the table goes; what it holds is the rest of the config",
    "trust_remote_code": "consent to run a checkpoint's code; what runs is models.<key>.model_name",
    "engine.*": "which processes embed (this command's ranks or Ray actors): every shard is "
    "embedded the same way by any of them",
    "logging.*": "what is printed",
    "tasks.batch_size": "items per forward pass; a job keeps the shards it started with "
    "(their tail is recorded with its listing)",
    "tasks.num_workers": "loader processes; a batch is the same for any number of them",
    "tasks.prefetch_factor": "batches each loader process prepares ahead",
    "tasks.resume": "what to do with the output's state, not what rows are made of",
    "tasks.overwrite": "what to do with the output's state, not what rows are made of",
    "tasks.build_retries": "retries of a download or a build that failed for a transient reason",
    "tasks.build_backoff_s": "the wait between those retries",
    "tasks.shard_size": "how the work is cut; a job keeps the shards it started with",
    "tasks.commit_every_s": "how often a long shard commits what it has done",
    "tasks.lease_s": "how long a silent process is presumed alive",
    "tasks.cpu": "the device the model runs on",
    "tasks.max_errors": "the exit code over an error budget; the table is written either way",
    "tasks.collective_timeout_s": "how long a rank waits for its peers",
    "models.*.device_map": "where a model's weights sit on this process's accelerators",
    "models.*.batch_seconds": "the simulated model's sleep per batch",
    "models.*.jitter": "the variation of the simulated model's sleep",
}

#: The ``tasks`` options that change the rows: name → why.
IDENTITY_TASK_OPTIONS: dict[str, str] = {
    "precision": "autocast precision of the forward pass: bf16 vectors differ from fp32 ones",
    "output_dtype": "the dtype the vectors are stored in",
    "max_image_pixels": "larger images are error rows instead of rows",
    "decode": "where JPEGs are decoded and resized: the device's decoder and filters give vectors "
    "close to PIL's, not equal",
}


def is_runtime(option: str) -> bool:
    """Whether the dotted ``option`` (``models.jina_v4.device_map``) is on ``RUNTIME_OPTIONS``."""
    return any(fnmatch.fnmatchcase(option, pattern) for pattern in RUNTIME_OPTIONS)


def model_identity(key: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A model's spec without the options that only say where it runs."""
    return {k: v for k, v in spec.items() if not is_runtime(f"models.{key}.{k}")}


def task_identity(settings: Any) -> dict[str, Any]:
    """The ``tasks`` options that are part of the identity, from ``TaskSettings``."""
    return {name: getattr(settings, name) for name in IDENTITY_TASK_OPTIONS}


def recorded_task_identity(spec: Mapping[str, Any], defaults: Any) -> dict[str, Any]:
    """The ``tasks`` part of a recorded spec. A spec recorded before it held a key gets that
    key's default (and its ``output_dtype``, recorded beside the models then)."""
    recorded = dict(spec.get("tasks") or {})
    if "output_dtype" not in recorded and "output_dtype" in spec:
        recorded["output_dtype"] = spec["output_dtype"]
    for name in IDENTITY_TASK_OPTIONS:
        recorded.setdefault(name, getattr(defaults, name))
    return recorded
