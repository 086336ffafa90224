"""Shared entry-point body: logging, then the work; user errors become one clear line.

Every command-line tool of the package (pipelines, search, evaluation, serve)
is declared with ``command_line.hydra_entry`` and runs its body inside
``user_errors_exit``, so they all fail the same way. This module and the
entry points import nothing heavy (torch, transformers, datasets) at import
time: ``--help`` and configuration errors answer before any of it loads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from img_search.failures import BuildError, HubUnavailable, PeerLost, hub_unavailable
from img_search.pipeline.settings import ConfigError, engine_settings
from img_search.registry import UnknownNameError

if TYPE_CHECKING:
    from img_search.pipeline.modality import Modality

log = logging.getLogger("img_search")

USER_ERRORS = (
    ConfigError,
    UnknownNameError,
    FileNotFoundError,
    BuildError,
    HubUnavailable,
    ValueError,
)


@contextlib.contextmanager
def user_errors_exit(cfg: DictConfig) -> Iterator[None]:
    """Set up logging from ``cfg.logging``; a user error inside exits 2 with one line.

    A lost peer exits 3. ``logging=debug`` lets the traceback through instead.
    A Hub access that cannot work from here (offline, no such repository) is
    a user error too, whichever library raised it.
    """
    from img_search.pipeline.reporting import setup_logging

    logging_cfg = cfg.get("logging") or {}
    level = str(logging_cfg.get("level", "INFO"))
    debug = level.upper() == "DEBUG"
    is_main = os.environ.get("RANK", "0") == "0"
    setup_logging(level, is_main=is_main, rich_tracebacks=debug)
    try:
        yield
    except PeerLost as exc:
        if debug:
            raise
        log.error("%s", exc)
        sys.exit(3)
    except Exception as exc:
        explained = exc if isinstance(exc, USER_ERRORS) else hub_unavailable(exc, None)
        if debug or explained is None:
            raise
        if is_main:
            log.error("%s", explained)
        sys.exit(2)


def run_cli(cfg: DictConfig, modality: Modality, dataset_specs: Mapping[str, Any]) -> None:
    """Run a pipeline from its composed Hydra config and exit with its status."""
    with user_errors_exit(cfg):
        code = run_configured(cfg, modality, dataset_specs)
    if code:
        sys.exit(code)


def run_configured(cfg: DictConfig, modality: Modality, dataset_specs: Mapping[str, Any]) -> int:
    """The job of a composed config, with the engine it names; returns the exit code.

    The command line and ``img_search.embed`` both run jobs through here. The
    run machinery (torch, Accelerate) is imported only once the job is
    planned, so a configuration error never waits for it. ``engine=ray``
    hands the same job to Ray actors (``ray_engine``).
    """
    if engine_settings(cfg.get("engine")).kind == "ray":
        from img_search.pipeline.ray_engine import run_on_ray

        return run_on_ray(cfg, modality, dataset_specs)
    from img_search.pipeline.plan import plan_job

    job = plan_job(cfg, modality, dataset_specs)
    from img_search.pipeline.runner import run_job

    return run_job(job)
