"""The saved indexes of one table: found among its side files, each current or stale, rebuilt.

A table grows (``img-search embed`` appends a model or a dataset) and every
index saved from its earlier version is then stale: it refuses to answer
(``search.indexes.load_index``). ``img-search build table=<t>`` with no index
named rebuilds each stale one as it was built (its kind and parameters), for
every (model, dataset) it was built for; ``img-search info`` lists them.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from img_search.search.indexes import (
    SavedIndex,
    build_all,
    build_index,
    rebuild_params,
    saved_index_dir,
    table_stamp,
)
from img_search.store import TableLayout
from img_search.store.selection import load_selection, table_contents

#: What ``build`` makes of a table that has no saved index yet.
DEFAULT_INDEXES = {"flat": {"kind": "flat"}}

log = logging.getLogger("img_search")


@dataclass
class IndexEntry:
    """One saved index of a table, read from its ``index.json`` (nothing else is loaded)."""

    path: Path
    meta: dict[str, Any]
    current: bool  # built from the table as it is now

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def model_name(self) -> str:
        return str(self.meta["model_name"])

    @property
    def dataset_name(self) -> str:
        return str(self.meta["dataset_name"])


def saved_indexes(table: str | os.PathLike[str]) -> list[IndexEntry]:
    """Every index saved for ``table``, by (model, dataset, name); another table's are not listed
    (the file table ``x.parquet`` and the folder ``x`` keep theirs apart, ``store.layout``)."""
    table = Path(table)
    stamp = table_stamp(table)
    entries = []
    for folder in sorted(_candidates(table)):
        meta = _meta(folder)
        if meta is None or not _belongs(folder, meta, table):
            continue
        entries.append(IndexEntry(folder, meta, meta.get("table_stamp") == stamp))
    return sorted(entries, key=lambda e: (e.model_name, e.dataset_name, e.name))


def _candidates(table: Path) -> set[Path]:
    """``x.*.index`` next to ``x.parquet``; ``x.side/*.index`` (and ``x.*.index``, where an earlier
    img_search saved them) for the folder ``x``."""
    layout = TableLayout(table)
    places = [layout.side_file("_"), layout.legacy_side_file("_")]
    patterns = [glob.escape(str(p)).removesuffix("_") + "*.index" for p in places if p]
    return {Path(p) for pattern in patterns for p in glob.glob(pattern)}


def _meta(folder: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads((folder / "index.json").read_text())
        if isinstance(meta, dict) and all(
            isinstance(meta.get(k), str) for k in ("name", "kind", "model_name", "dataset_name")
        ):
            return meta
    return None


def _belongs(folder: Path, meta: dict[str, Any], table: Path) -> bool:
    """Saved where this table's index of that name is looked for, and recording no other table
    that still exists (a table moved with its indexes keeps them)."""
    where = saved_index_dir(table, meta["model_name"], meta["dataset_name"], meta["name"])
    if where.resolve() != folder.resolve():
        return False
    recorded = Path(str(meta.get("table", "")))
    return not recorded.exists() or recorded.resolve() == table.resolve()


@dataclass
class Refreshed:
    """What became of one index: ``built`` (named on the command line), ``rebuilt`` (it was
    stale) or ``current`` (kept); ``saved`` is the index built, ``entry`` the one found."""

    entry: IndexEntry | None
    status: str
    saved: SavedIndex | None = None


def refresh_stale(
    table: str | os.PathLike[str],
    model_name: str | None = None,
    dataset_name: str | None = None,
) -> list[Refreshed]:
    """Rebuild every stale saved index of ``table`` (of one model or dataset when given); the
    current ones are kept. Each (model, dataset) is read once for all its indexes."""
    table = Path(table)
    entries = [
        e
        for e in saved_indexes(table)
        if model_name in (None, e.model_name) and dataset_name in (None, e.dataset_name)
    ]
    contents = table_contents(table)
    done: list[Refreshed] = []
    selections: dict[tuple[str, str], Any] = {}
    for entry in entries:
        if entry.current:
            done.append(Refreshed(entry, "current"))
            continue
        pair = (entry.model_name, entry.dataset_name)
        if (
            entry.model_name not in contents["models"]
            or entry.dataset_name not in contents["datasets"]
        ):
            log.warning(
                "index %s: %s × %s is no longer in %s; remove the index folder",
                entry.path,
                *pair,
                table,
            )
            continue
        if pair not in selections:
            selections[pair] = load_selection(table, *pair)
        saved = build_index(selections[pair], entry.name, entry.kind, rebuild_params(entry.meta))
        log.info("rebuilt %s (%s) of %s × %s → %s", entry.name, entry.kind, *pair, saved.path)
        done.append(Refreshed(entry, "rebuilt", saved))
    return done


def build_or_refresh(
    table: str,
    specs: Mapping[str, Mapping[str, Any]] | None,
    model_name: str | None = None,
    dataset_name: str | None = None,
) -> list[Refreshed]:
    """The indexes named in ``specs``, built; with none named, the table's stale ones rebuilt
    (the default ``flat`` built where the table has none in that scope)."""
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
