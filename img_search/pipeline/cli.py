"""Shared entry-point wrapper: logging, then the work; user errors become one clear line."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import DictConfig

from img_search.pipeline.distributed import BuildError, PeerLost
from img_search.pipeline.modality import Modality
from img_search.pipeline.plan import plan_job
from img_search.pipeline.reporting import setup_logging
from img_search.pipeline.runner import run_job
from img_search.pipeline.settings import ConfigError
from img_search.registry import UnknownNameError

log = logging.getLogger("img_search")

USER_ERRORS = (ConfigError, UnknownNameError, FileNotFoundError, BuildError, ValueError)


@contextlib.contextmanager
def user_errors_exit(cfg: DictConfig) -> Iterator[None]:
    """Set up logging from ``cfg.logging``; a user error inside exits 2 with one line.

    A lost peer exits 3. ``logging=debug`` lets the traceback through instead.
    Every command-line tool of the package (pipelines, search, evaluation)
    runs its body inside this, so they all fail the same way.
    """
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
    except USER_ERRORS as exc:
        if debug:
            raise
        if is_main:
            log.error("%s", exc)
        sys.exit(2)


def run_cli(cfg: DictConfig, modality: Modality, dataset_specs: Mapping[str, Any]) -> None:
    """Run a pipeline from its composed Hydra config and exit with its status."""
    with user_errors_exit(cfg):
        job = plan_job(cfg, modality, dataset_specs)
        code = run_job(job)
    if code:
        sys.exit(code)
