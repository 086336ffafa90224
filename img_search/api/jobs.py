"""``embed``: the command line's job from Python, composed by Hydra and run in this process.

The same configs, the same checks and the same run machinery as
``img-search embed`` / ``embed-text`` (``pipeline.engines.run_config``), so
a call resumes an unfinished job, does nothing for a finished one, and
appends a new model or dataset, exactly as the command does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A selection of a config group: a name, names, or names with options of each.
Choice = str | Sequence[str] | Mapping[str, Mapping[str, Any]]


@dataclass
class EmbedSummary:
    """What a job left: the table, its rows and the items reported unusable (all models and datasets)."""

    path: Path
    finished: bool
    rows: int
    errors: int
    seconds: float
    exit_code: int
    #: One entry per (model, dataset): ``{"model", "dataset", "rows", "errors"}``.
    pairs: list[dict[str, Any]] = field(default_factory=list)


def embed(
    models: Choice,
    datasets: Choice | None = None,
    output_path: str | os.PathLike[str] | None = None,
    *,
    text_dataset: Choice | None = None,
    overrides: Sequence[str] = (),
    **options: Any,
) -> EmbedSummary:
    """Embed images (``datasets``) or captions (``text_dataset``) into ``output_path``.

    ``models`` and ``datasets`` are config names (``"clip"``, ``["siglip2",
    "clip"]``), or names with options: ``datasets={"image_folder": {"path":
    "photos"}}``. Other options are the command line's, as Python values:
    ``tasks={"batch_size": 64}``, ``logging="quiet"``, ``trust_remote_code=True``;
    ``overrides`` takes Hydra override strings as they are written on a shell.
    """
    if (datasets is None) == (text_dataset is None):
        raise ValueError("give datasets=... (images) or text_dataset=... (captions), one of them")
    if output_path is None:
        raise ValueError("output_path is required: a .parquet file, or a folder for a folder table")
    args = [*choice("models", models)]
    if datasets is not None:
        args += choice("datasets", datasets)
    else:
        args += choice("text_dataset", text_dataset, single=True)  # type: ignore[arg-type]
    args.append(f"output_path={hydra_value(os.fspath(output_path))}")
    for key, value in options.items():
        args += flat_overrides(key, value)
    args += list(overrides)
    return run(args, captions=text_dataset is not None, output=Path(output_path))


def run(args: list[str], captions: bool, output: Path) -> EmbedSummary:
    from img_search.pipeline.engines import run_config
    from img_search.pipeline.modalities import MODALITIES

    modality = MODALITIES["caption" if captions else "image"]
    cfg = compose(modality.config_name, args)
    started = time.perf_counter()
    code = run_config(cfg, modality)
    return summary(output, code, time.perf_counter() - started)


def compose(config_name: str, args: list[str], module: str = "img_search.config") -> Any:
    """The config the command line would compose from ``args`` (a mistake: one ``ValueError`` line)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from img_search.hydra_errors import from_hydra, hydra_error_line
    from img_search.pipeline.config_store import register

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(module, version_base=None):
            return hydra_compose(config_name=config_name, overrides=args)
    except Exception as exc:
        if not from_hydra(exc):
            raise
        raise ValueError(hydra_error_line(exc, f"pkg://{module}")) from None
    finally:
        GlobalHydra.instance().clear()


def summary(output: Path, code: int, seconds: float) -> EmbedSummary:
    from img_search.store import is_table, read_metadata

    if not is_table(output):
        return EmbedSummary(output, False, 0, 0, seconds, code)
    meta = read_metadata(output)
    pairs = list(meta.get("pairs") or [])
    return EmbedSummary(
        output, True, int(meta.get("rows", 0)), int(meta.get("errors", 0)), seconds, code, pairs
    )


def choice(group: str, value: Choice, single: bool = False) -> list[str]:
    """``models="clip"`` → ``models=clip``; ``{"clip": {"model_name": "/x"}}`` adds ``models.clip.model_name='/x'``."""
    if isinstance(value, str):
        return [f"{group}={value}"]
    if isinstance(value, Mapping):
        names, options = list(value), value
    else:
        names, options = list(value), {}
    if single:
        if len(names) != 1:
            raise ValueError(f"{group} takes one name, got {names}")
        selected = [f"{group}={names[0]}"]
        prefix = {names[0]: group}  # text_dataset's options are text_dataset.<key>
    else:
        selected = [f"{group}=[{','.join(names)}]"]
        prefix = {name: f"{group}.{name}" for name in names}
    for name, settings in options.items():
        for key, setting in (settings or {}).items():
            selected += flat_overrides(f"{prefix[name]}.{key}", setting)
    return selected


def flat_overrides(key: str, value: Any) -> list[str]:
    """``tasks={"batch_size": 8}`` → ``tasks.batch_size=8``; a value that is not a dict is set whole."""
    if isinstance(value, Mapping):
        return [o for k, v in value.items() for o in flat_overrides(f"{key}.{k}", v)]
    return [f"{key}={hydra_value(value)}"]


def hydra_value(value: Any) -> str:
    """A Python value as Hydra's override grammar reads it back (strings quoted, lists as lists)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise TypeError(f"cannot pass {type(value).__name__} {value!r} as a config value")
