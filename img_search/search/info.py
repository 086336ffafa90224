"""``img-search info <table>``: what a table holds and whether each of its indexes is current.

Read from the table's metadata and its side files only (no vector is read):
the models × datasets with their rows and errors, the stored dtype, the size
on disk, when it was written and with which library versions, and next to
each (model, dataset) the indexes saved for it (``search.table_indexes``).
``Table.info()`` in the Python API returns the same ``TableInfo``;
``json=true`` prints its ``as_dict()`` for scripts.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.table import Table

from img_search.cli import user_errors_exit
from img_search.command_line import hydra_entry
from img_search.console import stdout_console

FORMS = {"file": "one Parquet file", "folder": "a folder of Parquet parts"}


@dataclass
class IndexInfo:
    name: str
    kind: str
    current: bool  # built from the table as it is now; a stale one refuses to answer
    rows: int
    path: str


@dataclass
class PairInfo:
    model_name: str
    dataset_name: str
    rows: int
    errors: int  # items that could not be embedded (the errors file names each)
    dim: int | None
    checkpoint: str | None
    indexes: list[IndexInfo] = field(default_factory=list)


@dataclass
class TableInfo:
    path: str
    form: str  # "file" (x.parquet) or "folder"
    kind: str  # "image" or "caption"
    dtype: str  # of the stored vectors
    size_bytes: int
    created: str | None
    rows: int
    errors: int
    errors_file: str | None
    versions: dict[str, Any]
    pairs: list[PairInfo]

    @property
    def stale(self) -> list[IndexInfo]:
        return [i for p in self.pairs for i in p.indexes if not i.current]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def table_info(path: str | os.PathLike[str]) -> TableInfo:
    """What ``img-search info`` shows of the table at ``path`` (a file or a folder table)."""
    from img_search.search.table_indexes import saved_indexes
    from img_search.store import TableLayout, read_metadata
    from img_search.store.reader import table_files

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"embedding table not found: {path}")
    metadata = read_metadata(path)
    layout = TableLayout(path)
    models = metadata.get("models") or {}
    pairs: dict[tuple[str, str], PairInfo] = {}
    for model, dataset, rows, errors in _pair_counts(path, metadata):
        identity = models.get(model) or {}
        pairs[(model, dataset)] = PairInfo(
            model, dataset, rows, errors, identity.get("dim"), identity.get("checkpoint")
        )
    for entry in saved_indexes(path):
        key = (entry.model_name, entry.dataset_name)
        if key not in pairs:  # built for rows the table no longer holds
            pairs[key] = PairInfo(*key, rows=0, errors=0, dim=None, checkpoint=None)
        index = IndexInfo(
            entry.name, entry.kind, entry.current, int(entry.meta.get("count", 0)), str(entry.path)
        )
        pairs[key].indexes.append(index)
    files = [*table_files(path), layout.metadata_file] if layout.is_folder else [path]
    errors_file = layout.errors_path
    return TableInfo(
        path=str(path),
        form="folder" if layout.is_folder else "file",
        kind=str(metadata.get("kind", "image")),
        dtype=str(metadata.get("output_dtype", "float32")),
        size_bytes=sum(f.stat().st_size for f in set(files) if f.is_file()),
        created=metadata.get("created"),
        rows=sum(p.rows for p in pairs.values()),
        errors=sum(p.errors for p in pairs.values()),
        errors_file=str(errors_file) if errors_file.is_file() else None,
        versions=dict(metadata.get("versions") or {}),
        pairs=list(pairs.values()),
    )


def _pair_counts(path: Path, metadata: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """(model, dataset, rows, errors) of each pair: as the metadata records them, or counted (a
    table written before pairs were recorded)."""
    recorded = metadata.get("pairs")
    if isinstance(recorded, list) and recorded:
        counts: dict[tuple[str, str], list[int]] = {}
        for pair in recorded:
            key = (str(pair["model"]), str(pair["dataset"]))
            rows, errors = counts.setdefault(key, [0, 0])
            counts[key] = [rows + int(pair.get("rows", 0)), errors + int(pair.get("errors", 0))]
        return [(*key, rows, errors) for key, (rows, errors) in counts.items()]
    from img_search.store import read_table
    from img_search.store import schema as S

    grouped = read_table(path, columns=[S.MODEL, S.DATASET]).group_by([S.MODEL, S.DATASET])
    rows = grouped.aggregate([([], "count_all")]).to_pylist()
    return [(r[S.MODEL], r[S.DATASET], int(r["count_all"]), 0) for r in rows]


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


if __name__ == "__main__":
    main()
