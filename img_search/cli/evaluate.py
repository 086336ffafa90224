"""``img-search evaluate`` (``python -m img_search.search.evaluate task=retrieval|inquire|inquire_fullrank|ann``).

The command only: the tasks, and what is printed and written, are in
``img_search.eval.tasks``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from img_search.cli.errors import user_errors_exit
from img_search.cli.hydra_entry import hydra_entry


@hydra_entry(config_path="pkg://img_search.config.search", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg):
        from img_search.eval.tasks import evaluate_command

        evaluate_command(cfg)
