"""``img-search report`` (``python -m img_search.search.report runs=[...] task=[...] output=<folder>``).

The command only: the report is made by ``img_search.eval.report``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from img_search.cli.errors import user_errors_exit
from img_search.cli.hydra_entry import hydra_entry


@hydra_entry(config_path="pkg://img_search.config.search", config_name="report")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg):
        from img_search.eval.report import report_command

        report_command(cfg)
