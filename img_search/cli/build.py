"""``img-search build`` (``python -m img_search.search.build table=<table> [indexes=[...]]``).

The command only: building and refreshing are ``search.table_indexes.build_or_refresh``
(with ``indexes=[...]``, those indexes of one (model, dataset); with none named,
every stale saved index of the table rebuilt as it was built, or ``flat`` for a
table with none); this prints what became of each index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from img_search.cli.errors import user_errors_exit
from img_search.cli.hydra_entry import hydra_entry
from img_search.console import stdout_console

if TYPE_CHECKING:
    from img_search.search.table_indexes import Refreshed


def print_built(done: list[Refreshed]) -> None:
    table = Table(title="indexes")
    columns = (
        "name",
        "kind",
        "model",
        "dataset",
        "status",
        "rows",
        "left out",
        "dim",
        "build s",
        "MiB",
    )
    for column in columns:
        table.add_column(column)
    paths = []
    for item in done:
        saved = item.saved
        m = saved.meta if saved is not None else item.entry.meta
        paths.append((m["name"], saved.path if saved else item.entry.path))
        left_out = len(saved.left_out) if saved else sum((m.get("left_out") or {}).values())
        table.add_row(
            m["name"],
            m["kind"],
            m["model_name"],
            m["dataset_name"],
            item.status,
            str(m["count"]),
            str(left_out),  # null or non-finite vectors (``store.vectors``)
            str(m["dim"]),
            f"{m['build_seconds']:.2f}",
            f"{saved.index.nbytes() / 2**20:.1f}" if saved else "",
        )
    out = stdout_console()  # names and paths: user text
    out.print(table)
    for name, path in paths:  # whole, on lines of their own: a cell would cut or wrap a long path
        out.print(f"{name}: {path}", soft_wrap=True)


@hydra_entry(config_path="pkg://img_search.config.search", config_name="build")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg):
        from img_search.search.table_indexes import build_or_refresh

        named = cfg.get("indexes")
        specs = OmegaConf.to_container(named, resolve=True) if named else None
        done = build_or_refresh(str(cfg.table), specs, cfg.model_name, cfg.dataset_name)
        for item in done:
            if item.saved is not None:
                item.saved.close()  # a milvus index lets go of its connection (and Lite its file)
        print_built(done)
