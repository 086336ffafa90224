"""The pipelines' entry-point body: run the configured job with its engine, exit with its status.

Declared with ``command_line.hydra_entry`` and run inside
``cli.user_errors_exit`` like every tool of the package. This module and the
entry points import nothing heavy (torch, transformers, datasets) at import
time: ``--help`` and configuration errors answer before any of it loads.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from img_search.cli import user_errors_exit
from img_search.pipeline.interrupt import interrupted_exit
from img_search.pipeline.settings import engine_settings

if TYPE_CHECKING:
    from img_search.pipeline.modality import Modality


def run_cli(cfg: DictConfig, modality: Modality, dataset_specs: Mapping[str, Any]) -> None:
    """Run a pipeline from its composed Hydra config and exit with its status (130 and one line
    saying what is kept after Ctrl-C: ``interrupt.py``)."""
    with user_errors_exit(cfg), interrupted_exit(cfg):
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
    from img_search.console import configure_output

    configure_output(cfg.get("logging"))  # the Python API's logging="quiet" too
    if engine_settings(cfg.get("engine")).kind == "ray":
        from img_search.pipeline.ray_engine import run_on_ray

        return run_on_ray(cfg, modality, dataset_specs)
    from img_search.pipeline.plan import plan_job

    job = plan_job(cfg, modality, dataset_specs)
    from img_search.pipeline.runner import run_job

    return run_job(job)
