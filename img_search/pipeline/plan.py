"""Plan a job from its config: validate everything that needs no model, and say what the table is made of.

A job's *spec* is the full resolved spec of every model and every dataset
(each option the encoder or dataset receives, defaults included, derived
from its constructor), plus what every row shares (kind, and the ``tasks``
options of ``identity.IDENTITY_TASK_OPTIONS``: precision, output dtype …).
Together with the source listings and the models' preprocessing, recorded
once they are known, it is compared on resume and against a finished table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from img_search.pipeline.identity import model_identity, recorded_task_identity, task_identity
from img_search.pipeline.modalities import Modality
from img_search.pipeline.settings import ConfigError, TaskSettings
from img_search.store import TableLayout

if TYPE_CHECKING:
    from img_search.embedding import Encoder


@dataclass
class Job:
    """A validated job: everything constructed, nothing loaded or listed."""

    settings: TaskSettings
    layout: TableLayout
    modality: Modality
    encoders: dict[str, Encoder]
    sources: dict[str, Any]
    config: dict[str, Any]
    #: The user's consent to run code shipped with a checkpoint (``trust_remote_code=true``).
    trust_remote_code: bool = False

    def spec(self) -> dict[str, Any]:
        """What the rows of this job are made of, from the config alone."""
        return {
            "kind": self.modality.kind,
            "tasks": task_identity(self.settings),
            "models": {key: model_spec(encoder) for key, encoder in self.encoders.items()},
            "datasets": {name: dict(source.spec) for name, source in self.sources.items()},
        }

    def pairs(self) -> list[tuple[str, str]]:
        return [(model, dataset) for model in self.encoders for dataset in self.sources]


def model_spec(encoder: Encoder) -> dict[str, Any]:
    return model_identity(encoder.name, encoder.spec)


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    from img_search.embedding.base import fingerprint

    return fingerprint(spec)


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
        raise ConfigError(
            "output_path is not set: add output_path=<file.parquet> (or a folder for a folder table)"
        )
    layout = TableLayout.of(str(output))
    check_writable(layout.path.parent)
    model_specs = cfg.get("models") or {}
    if not model_specs:
        raise ConfigError("no model selected: add models=<name> (or models=[a,b])")
    if not dataset_specs:
        raise ConfigError("no dataset selected")
    trust_remote_code = bool(cfg.get("trust_remote_code", False))
    # the encoder classes import torch: only once the checks above have passed
    from img_search.embedding import get_encoder
    from img_search.embedding.base import remote_code_refusal

    encoders = {}
    for key, spec in model_specs.items():
        encoder = get_encoder(plain(spec), name=str(key))
        if not modality.supports(encoder):
            raise ConfigError(f"model {key} ({encoder.kind}) cannot embed {modality.kind}s")
        if encoder.runs_checkpoint_code and not trust_remote_code:
            raise ConfigError(remote_code_refusal(encoder))
        encoders[str(key)] = encoder
    sources = {str(k): modality.make_source(str(k), plain(v)) for k, v in dataset_specs.items()}
    config = OmegaConf.to_container(cfg, resolve=True)
    return Job(settings, layout, modality, encoders, sources, config, trust_remote_code)  # type: ignore[arg-type]


def first_difference(before: Any, now: Any, where: str = "") -> str | None:
    """The first setting that differs between two specs, in words; None if equal."""
    if before == now:
        return None
    if isinstance(before, dict) and isinstance(now, dict):
        for key in sorted(set(before) | set(now), key=str):
            inner = first_difference(
                before.get(key), now.get(key), f"{where}.{key}" if where else key
            )
            if inner:
                return inner
    return f"{where}: {before!r} then, {now!r} now"


@dataclass
class Comparison:
    """How a requested job relates to the one recorded at the output."""

    conflict: str | None  # a difference that is refused
    new_pairs: list[tuple[str, str]]  # (model, dataset) pairs the recorded job does not have
    missing_pairs: list[tuple[str, str]]  # recorded pairs the requested job does not have


def compare_specs(
    recorded: Mapping[str, Any],
    recorded_pairs: list[tuple[str, str]],
    requested: Mapping[str, Any],
    requested_pairs: list[tuple[str, str]],
) -> Comparison:
    """Same shared settings, same spec for every model and dataset both name; pairs may differ."""
    conflict = first_difference(recorded.get("kind"), requested.get("kind"), "kind")
    before_tasks = recorded_task_identity(recorded, TaskSettings)
    conflict = conflict or first_difference(before_tasks, requested.get("tasks") or {}, "tasks")
    for group in ("models", "datasets"):
        before, now = recorded.get(group) or {}, requested.get(group) or {}
        for name in sorted(set(before) & set(now)):
            conflict = conflict or first_difference(before[name], now[name], f"{group}.{name}")
    known = {tuple(p) for p in recorded_pairs}
    wanted = [tuple(p) for p in requested_pairs]
    return Comparison(
        conflict=conflict,
        new_pairs=[p for p in wanted if p not in known],  # type: ignore[misc]
        missing_pairs=sorted(p for p in known if p not in set(wanted)),  # type: ignore[misc]
    )


def check_writable(folder: Path) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ConfigError(f"output directory is not writable: {folder}")
    folder.mkdir(parents=True, exist_ok=True)


def plain(node: Any) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)
