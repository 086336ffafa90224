"""Shared entry-point wrapper: logging, then plan and run; user errors become one clear line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from img_search.pipeline.distributed import BuildError, PeerLost
from img_search.pipeline.reporting import setup_logging
from img_search.pipeline.runner import Modality, plan_job, run_job
from img_search.pipeline.settings import ConfigError
from img_search.registry import UnknownNameError

log = logging.getLogger("img_search")

USER_ERRORS = (ConfigError, UnknownNameError, FileNotFoundError, BuildError, ValueError)


def run_cli(cfg: DictConfig, modality: Modality, dataset_specs: Mapping[str, Any]) -> None:
    """Run a pipeline from its composed Hydra config and exit with its status."""
    logging_cfg = cfg.get("logging") or {}
    level = str(logging_cfg.get("level", "INFO"))
    debug = level.upper() == "DEBUG"
    is_main = os.environ.get("RANK", "0") == "0"
    setup_logging(level, is_main=is_main, rich_tracebacks=debug)
    try:
        job = plan_job(cfg, modality, dataset_specs)
        code = run_job(job, modality)
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
    if code:
        sys.exit(code)
