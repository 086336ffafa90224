"""A Ray actor of ``engine=ray``: one process that runs the job as a launch of its own would.

The driver (``ray_driver.py``) starts the actors; each composes the job from
the driver's resolved config (``ready``) and then launches it (``run``) in
the place the engine gives it: worker ``i`` of ``n`` (where it starts in the
listing), its CPUs and GPUs, joining the output the driver opened and never
discarding it. What it returns (``launch.Launched``: its report and what it
found at the end) goes back to the driver, which prints the one summary.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from img_search.pipeline.modalities import MODALITIES
from img_search.pipeline.settings import RayEngine

if TYPE_CHECKING:  # torch comes with the job, once the actor composes it
    from img_search.pipeline.launch import Launched
    from img_search.pipeline.plan import Job

log = logging.getLogger("img_search")


class EmbedWorker:
    """A Ray actor: one process that embeds the job's shards as a launch of the command would."""

    def __init__(
        self,
        index: int,
        count: int,
        config: dict[str, Any],
        kind: str,
        dataset_specs: dict[str, Any],
        cwd: str,
        engine: RayEngine,
    ) -> None:
        self.index, self.count, self.name = index, count, f"ray worker {index + 1} of {count}"
        self.config, self.kind, self.dataset_specs = config, kind, dataset_specs
        self.cwd, self.engine = cwd, engine
        self.job: Job | None = None

    def ready(self) -> str:
        """Compose the job from the resolved config (torch and the encoder classes load here)."""
        from omegaconf import OmegaConf
        from transformers.utils import logging as hf_logging

        from img_search.console import console, setup_logging
        from img_search.host import HOST
        from img_search.pipeline.plan import plan_job

        setup_logging(str((self.config.get("logging") or {}).get("level", "INFO")), is_main=False)
        console.quiet = True  # progress bars and the summary are the driver's
        hf_logging.disable_progress_bar()  # "Loading weights", once per actor
        if os.path.isdir(self.cwd):  # relative paths in the config mean what they mean there
            os.chdir(self.cwd)
        else:
            log.warning(
                "%s: %s is not on %s: relative dataset paths are read from %s",
                self.name,
                self.cwd,
                HOST,
                os.getcwd(),
            )
        modality = MODALITIES[self.kind]
        self.job = plan_job(OmegaConf.create(self.config), modality, self.dataset_specs)
        return f"host {HOST}, pid {os.getpid()}"

    def run(self) -> Launched:
        """This actor's share of the job, then an attempt to finish the table."""
        from img_search.pipeline.launch import Place, launch

        assert self.job is not None
        place = Place(
            worker=(self.index, self.count),  # the actors start on their own stretches
            cores=self.engine.num_cpus_per_worker,
            cpu=self.engine.num_gpus_per_worker == 0,
            joins=True,  # the driver opened the output (overwrite, resume): the actors join it
            role=self.name,
        )
        return launch(self.job, place)
