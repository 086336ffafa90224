"""``img-search build table=<table> [indexes=[...]]``: build and save indexes, or bring them up to date.

With ``indexes=[...]``, those indexes of one (model, dataset) are built. With
none named, every saved index of the table that is stale is rebuilt as it
was built (``search.table_indexes``), whatever (model, dataset) it is of; a
table with no saved index gets its exact index (``flat``), as before.
"""

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
    from img_search.search.table_indexes import Refreshed

#: What ``build`` makes of a table that has no saved index yet.
DEFAULT_INDEXES = {"flat": {"kind": "flat"}}

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


def build_or_refresh(
    table: str,
    specs: Mapping[str, Mapping[str, Any]] | None,
    model_name: str | None = None,
    dataset_name: str | None = None,
) -> list[Refreshed]:
    """The indexes named in ``specs``, built; with none named, the table's stale ones rebuilt
    (the default ``flat`` built where the table has none in that scope)."""
    from img_search.search.table_indexes import Refreshed, refresh_stale, saved_indexes

    if not specs:
        scope = [
            e
            for e in saved_indexes(table)
            if model_name in (None, e.model_name) and dataset_name in (None, e.dataset_name)
        ]
        if scope:
            return refresh_stale(table, model_name, dataset_name)
        specs = DEFAULT_INDEXES
    return [
        Refreshed(None, "built", saved)
        for saved in build_all(table, specs, model_name, dataset_name)
    ]


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
        named = cfg.get("indexes")
        specs = OmegaConf.to_container(named, resolve=True) if named else None
        done = build_or_refresh(str(cfg.table), specs, cfg.model_name, cfg.dataset_name)
        for item in done:
            if item.saved is not None:
                item.saved.close()  # a milvus index lets go of its connection (and Lite its file)
        print_built(done)


if __name__ == "__main__":
    main()
