"""``python -m img_search.search.build table=<table> indexes=[...]``: build and save indexes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from img_search.cli import user_errors_exit
from img_search.command_line import hydra_entry
from img_search.console import stdout_console

if TYPE_CHECKING:
    from img_search.search.indexes import SavedIndex

log = logging.getLogger("img_search")


def build_all(
    table: str,
    specs: Mapping[str, Mapping[str, Any]],
    model_name: str | None = None,
    dataset_name: str | None = None,
) -> list[SavedIndex]:
    """Every configured index of one (model, dataset) selection, each saved next to the table."""
    from img_search.search.indexes import build_index, index_specs
    from img_search.search.tables import load_selection

    selection = load_selection(table, model_name, dataset_name)
    built = []
    for name, (kind, params) in index_specs(specs).items():
        saved = build_index(selection, name, kind, params)
        log.info(
            "built %s (%s) in %.2f s → %s", name, kind, saved.meta["build_seconds"], saved.path
        )
        built.append(saved)
    return built


def print_built(built: list[SavedIndex]) -> None:
    table = Table(title="indexes")
    columns = (
        "name",
        "kind",
        "model",
        "dataset",
        "rows",
        "left out",
        "dim",
        "build s",
        "MiB",
        "path",
    )
    for column in columns:
        table.add_column(column)
    for saved in built:
        m = saved.meta
        table.add_row(
            m["name"],
            m["kind"],
            m["model_name"],
            m["dataset_name"],
            str(m["count"]),
            str(len(saved.left_out)),  # null or non-finite vectors (``store.vectors``)
            str(m["dim"]),
            f"{m['build_seconds']:.2f}",
            f"{saved.index.nbytes() / 2**20:.1f}",
            str(saved.path),
        )
    stdout_console(width=200).print(table)  # names and paths: user text


@hydra_entry(config_path="pkg://img_search.config.search", config_name="build")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg):
        specs = OmegaConf.to_container(cfg.indexes, resolve=True)
        built = build_all(cfg.table, specs, cfg.model_name, cfg.dataset_name)
        for saved in built:
            saved.close()  # a milvus index lets go of its connection (and Milvus Lite its file)
        print_built(built)


if __name__ == "__main__":
    main()
