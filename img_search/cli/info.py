"""``img-search info <table>`` (``python -m img_search.search.info``): what a table holds and whether
each of its indexes is current.

The command only: the facts are ``search.table_info.table_info`` (metadata
and side files, no vector read); this prints them, or with ``json=true`` the
same ``TableInfo`` as JSON for scripts.
"""

from __future__ import annotations

import json
import os
import sys

from omegaconf import DictConfig
from rich.table import Table

from img_search.cli.errors import user_errors_exit
from img_search.cli.hydra_entry import hydra_entry
from img_search.console import stdout_console
from img_search.search.table_info import TableInfo, table_info

FORMS = {"file": "one Parquet file", "folder": "a folder of Parquet parts"}


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size:,} bytes"
    scaled, units = size / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while scaled >= 1024 and len(units) > 1:
        scaled, units = scaled / 1024, units[1:]
    return f"{scaled:,.1f} {units[0]}"


def print_info(info: TableInfo) -> None:
    console = stdout_console(width=160 if not sys.stdout.isatty() else None)  # names: user text
    versions = ", ".join(f"{name} {v}" for name, v in info.versions.items() if v)
    for label, value in (
        ("table", f"{info.path} ({info.kind} table, {FORMS[info.form]})"),
        ("vectors", f"{info.dtype}, {info.rows:,} rows, {info.errors:,} errors"),
        ("size", size_text(info.size_bytes)),
        ("created", info.created or "not recorded"),
        ("versions", versions or "not recorded"),
        ("errors file", info.errors_file or "none"),
    ):
        console.print(f"{label + ':':<12} {value}")
    table = Table(title=None)
    for column in ("model", "dataset", "rows", "errors", "dim", "checkpoint", "indexes"):
        table.add_column(column, justify="right" if column in ("rows", "errors", "dim") else "left")
    for p in info.pairs:
        indexes = ", ".join(
            f"{i.name}{'' if i.name == i.kind else f' ({i.kind})'} "
            f"{'current' if i.current else 'STALE'}"
            for i in p.indexes
        )
        table.add_row(
            p.model_name,
            p.dataset_name,
            f"{p.rows:,}",
            f"{p.errors:,}",
            "" if p.dim is None else str(p.dim),
            p.checkpoint or "",
            indexes or "none",
        )
    console.print(table)
    if info.stale:
        from img_search.search.indexes import build_command

        console.print(f"stale indexes refuse to answer; rebuild them: {build_command(info.path)}")


@hydra_entry(config_path="pkg://img_search.config.search", config_name="info")
def command(cfg: DictConfig) -> None:
    with user_errors_exit(cfg):
        info = table_info(str(cfg.table))
        if cfg.json:
            sys.stdout.write(json.dumps(info.as_dict(), indent=2, ensure_ascii=False) + "\n")
            return
        print_info(info)


def positional_table(args: list[str]) -> list[str]:
    """``info <table>``: a first argument that is no option nor override is ``table=<table>``."""
    if args and not args[0].startswith("-") and ("=" not in args[0] or os.path.exists(args[0])):
        quoted = args[0].replace("'", "\\'")
        return [f"table='{quoted}'", *args[1:]]
    return args


def main() -> None:
    sys.argv[1:] = positional_table(sys.argv[1:])
    command()
