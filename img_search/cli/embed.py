"""``img-search embed`` (``python -m img_search.pipeline.embed models=... datasets=... output_path=...``).

The command only: it composes the config, runs the job with its engine
(``pipeline.engines``) inside the exit-code policy, and exits with the job's
status. Nothing heavy (torch, transformers, datasets) loads before the job
is planned: ``--help`` and configuration errors answer at once.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from img_search.cli.errors import user_errors_exit
from img_search.cli.hydra_entry import hydra_entry
from img_search.pipeline.engines import run_config
from img_search.pipeline.interrupt import interrupted_exit
from img_search.pipeline.modalities import IMAGES, Modality


def run_cli(cfg: DictConfig, modality: Modality) -> None:
    """Run a pipeline from its composed Hydra config and exit with its status (130 and one line
    saying what is kept after Ctrl-C: ``pipeline.interrupt``)."""
    with user_errors_exit(cfg), interrupted_exit(cfg):
        code = run_config(cfg, modality)
    if code:
        sys.exit(code)


@hydra_entry(config_path="pkg://img_search.config", config_name=IMAGES.config_name)
def main(cfg: DictConfig) -> None:
    run_cli(cfg, IMAGES)
