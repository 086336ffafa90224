"""Engines: which processes a job runs in, and what each may use; the run machinery is shared.

``run_config`` is the one way in for the command and the API: the engine a
composed config names decides the processes (local ranks and Slurm array
tasks: ``launch.run_job`` in each; ``engine=ray``: ``ray_driver``). The run
machinery (torch, Accelerate) is imported only once the job is planned, so a
configuration error never waits for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from img_search.pipeline.settings import engine_settings

if TYPE_CHECKING:
    from img_search.pipeline.modalities import Modality


def run_config(cfg: DictConfig, modality: Modality) -> int:
    """The job of a composed config, with the engine it names; returns the exit code.

    The command line and ``img_search.embed`` both run jobs through here.
    ``engine=ray`` hands the same job to Ray actors (``engines.ray_driver``).
    """
    from img_search.console import configure_output

    configure_output(cfg.get("logging"))  # the Python API's logging="quiet" too
    dataset_specs = modality.dataset_specs(cfg)
    if engine_settings(cfg.get("engine")).kind == "ray":
        from img_search.pipeline.engines.ray_driver import run_on_ray

        return run_on_ray(cfg, modality, dataset_specs)
    from img_search.pipeline.plan import plan_job

    job = plan_job(cfg, modality, dataset_specs)
    from img_search.pipeline.launch import run_job

    return run_job(job)
