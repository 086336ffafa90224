"""Saved indexes: built from one (model, dataset) of a table, saved beside it, reloaded, rebuilt when stale.

An index is saved as a folder among the table's side files
(``TableLayout.index_dir``: ``<stem>.<model>.<dataset>.<name>.index`` next to a
file table, ``<folder>.side/<model>.<dataset>.<name>.index`` for a folder
table) holding the library's own file, the ids in index order,
``left_out.parquet`` (the rows left out for a null or non-finite vector, when
there are any) and ``index.json`` with the model identity and the table it
came from, so it reloads without rebuilding and refuses to answer for a table
that has changed since. The index kinds themselves are ``search.kinds``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from img_search.atomic import atomic_write
from img_search.registry import UnknownNameError
from img_search.search.kinds import INDEX_KINDS, FilterError, FlatIndex, VectorIndex, make_index
from img_search.store import TableLayout
from img_search.store.selection import TableSelection, choose_selection, load_selection

__all__ = ["INDEX_KINDS", "FilterError", "FlatIndex", "SavedIndex", "VectorIndex", "make_index"]

FORMAT = "img_search.index/1"
LEFT_OUT_FILE = "left_out.parquet"
LEFT_OUT_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("reason", pa.string())])
log = logging.getLogger(__name__)

# -- saved indexes ------------------------------------------------------------


def index_dir(table: str | os.PathLike[str], model_name: str, dataset_name: str, name: str) -> Path:
    """Where the index ``name`` of one (model, dataset) of ``table`` is saved (``TableLayout.index_dir``)."""
    return TableLayout(Path(table)).index_dir(model_name, dataset_name, name)


def saved_index_dir(
    table: str | os.PathLike[str], model_name: str, dataset_name: str, name: str
) -> Path:
    """Where that index is found: its place, or beside a folder table where an earlier img_search
    saved it, when it records that table (a rebuild saves it in its place)."""
    place = index_dir(table, model_name, dataset_name, name)
    earlier = TableLayout(Path(table)).legacy_side_file(place.name)
    if earlier is not None and not (place / "index.json").exists():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            recorded = json.loads((earlier / "index.json").read_text())["table"]
            if Path(recorded) == Path(table).resolve():
                return earlier
    return place


def table_stamp(path: Path) -> dict[str, Any]:
    """What identifies one version of a table: a rewritten table (or folder metadata) gets a new stamp."""
    stat = TableLayout.of(path).metadata_file.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class SavedIndex:
    """An index with the ids it returns and the identity of the model that made its vectors.

    ``left_out``: the table's rows that are not in it (their vector is null or
    not finite, ``store.vectors``), id → reason.
    """

    def __init__(
        self,
        path: Path,
        index: VectorIndex,
        meta: dict[str, Any],
        ids: np.ndarray,
        left_out: dict[str, str] | None = None,
    ):
        self.path, self.index, self.meta, self.ids = path, index, meta, ids
        self.left_out = dict(left_out or {})
        index.attach(ids)

    @property
    def model_name(self) -> str:
        return self.meta["model_name"]

    @property
    def dataset_name(self) -> str:
        return self.meta["dataset_name"]

    @property
    def table(self) -> Path:
        return Path(self.meta["table"])

    @property
    def model_spec(self) -> dict[str, Any]:
        """The resolved encoder spec the table records (``table_encoder.encoder_of`` rebuilds it)."""
        return self.meta.get("model_spec") or {}

    @property
    def identity(self) -> dict[str, Any]:
        """The identity of the model that made the vectors, as the table records it."""
        return self.meta.get("identity") or {}

    def search(
        self, queries: np.ndarray, k: int, where: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self.ids))
        if where is None:
            return self.index.search(queries, k)
        return self.index.search(queries, k, where=where)

    @property
    def filters(self) -> bool:
        """Whether its kind takes a filter (``milvus``)."""
        return self.index.filters

    def parse_filter(self, text: str | None) -> Any:
        """A ``filter=`` checked for ``search``/``top_k`` (``FilterError`` says what is wrong)."""
        return self.index.parse_filter(text)

    def vector(self, position: int) -> np.ndarray:
        return self.index.vector(position)

    def close(self) -> None:
        self.index.close()

    def top_k(
        self, vector: np.ndarray, k: int, exclude: str | None = None, where: Any = None
    ) -> list[tuple[int, str, float]]:
        """(position, id, score) of the ``k`` best items for one query, best first.

        Padding (fewer than ``k`` items) is dropped, and so is ``exclude`` —
        the item itself in a "more like this" query. ``where``: a parsed filter.
        A score that is not finite is never an answer (an index saved before
        non-finite rows were left out may hold some).
        """
        scores, positions = self.search(vector[None, :], k + (exclude is not None), where)
        hits = []
        for score, position in zip(scores[0], positions[0], strict=True):
            if position < 0 or not np.isfinite(score) or str(self.ids[position]) == exclude:
                continue
            hits.append((int(position), str(self.ids[position]), float(score)))
        return hits[:k]


def build_index(
    selection: TableSelection, name: str, kind: str, params: dict[str, Any], save: bool = True
) -> SavedIndex:
    """Build an index of one table selection (and save it among the table's side files).

    The selection holds no row with a null or non-finite vector (``load_selection``
    left them out and warned); the index records how many it lacks.
    """
    index = make_index(kind, selection.dim, **params)
    started = time.perf_counter()
    index.add_selection(selection, name)
    build_seconds = time.perf_counter() - started
    meta = {
        "format": FORMAT,
        "name": name,
        "kind": kind,
        "params": index.params,
        "metric": "inner_product",
        "count": len(selection),
        "dim": selection.dim,
        "build_seconds": round(build_seconds, 3),
        "table": str(selection.path.resolve()),
        "table_stamp": table_stamp(selection.path),
        "model_name": selection.model_name,
        "dataset_name": selection.dataset_name,
        "table_kind": selection.kind,
        "identity": selection.identity,
        "model_spec": selection.model_spec,
        "dataset": selection.dataset,
        "left_out": selection.left_out.counts(),
    }
    path = index_dir(selection.path, selection.model_name, selection.dataset_name, name)
    saved = SavedIndex(path, index, meta, selection.ids, selection.left_out.reasons())
    if save:
        try:
            _write(saved)
        except OSError as exc:  # a read-only table folder: answer from memory, rebuild next time
            log.warning("index %s not saved (%s); it is rebuilt on every start", path, exc)
    return saved


def _write(saved: SavedIndex) -> None:
    """Files go to a temporary folder first, renamed into place complete."""

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        saved.index.save(tmp)
        pq.write_table(pa.table({"id": pa.array(saved.ids, pa.string())}), tmp / "ids.parquet")
        if saved.left_out:
            left_out = {"id": list(saved.left_out), "reason": list(saved.left_out.values())}
            pq.write_table(pa.table(left_out, schema=LEFT_OUT_SCHEMA), tmp / LEFT_OUT_FILE)
        (tmp / "index.json").write_text(json.dumps(saved.meta, indent=2, default=str))

    atomic_write(saved.path, write)


class StaleIndex(ValueError):
    """The table changed after the index was built."""


def load_index(
    path: str | os.PathLike[str], table: str | os.PathLike[str] | None = None
) -> SavedIndex:
    """Reload a saved index (no rebuilding); refuses one whose table has changed.

    The table is ``table`` when given (the path the user named), else the one
    recorded at build time, else — when that is gone because both were moved —
    the table of the same name next to the index.
    """
    path = Path(path)
    meta_file = path / "index.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"not a saved index (no index.json): {path}")
    meta = json.loads(meta_file.read_text())
    recorded = Path(meta["table"])
    if table is not None:
        current = Path(table)
        if recorded.exists() and recorded.resolve() != current.resolve():
            raise StaleIndex(f"the index {path} was built for another table, {recorded}")
    elif recorded.exists():
        current = recorded
    else:
        current = TableLayout.owner_of(path, recorded.name)
    if current.exists():
        if table_stamp(current) != meta.get("table_stamp"):
            raise StaleIndex(
                f"{current} changed after the index {path} was built: rebuild it "
                f"({build_command(current)} rebuilds every stale index of it)"
            )
        meta["table"] = str(current.resolve())
    index = make_index(meta["kind"], int(meta["dim"]), **meta.get("params", {}))
    index.load(path)
    ids = pq.read_table(path / "ids.parquet").column("id").to_numpy(zero_copy_only=False)
    left_out = {}
    if (path / LEFT_OUT_FILE).is_file():
        rows = pq.read_table(path / LEFT_OUT_FILE).to_pydict()
        left_out = dict(zip(rows["id"], rows["reason"], strict=True))
    return SavedIndex(path, index, meta, ids, left_out)


def open_index(
    path: str | os.PathLike[str],
    model_name: str | None = None,
    dataset_name: str | None = None,
    name: str = "flat",
    kind: str = "flat",
    params: dict[str, Any] | None = None,
) -> SavedIndex:
    """A saved index folder, or a table: its saved index ``name`` if current, else built and saved."""
    path = Path(path)
    if (path / "index.json").is_file():
        saved = load_index(path)
        for what, wanted, held in (
            ("model_name", model_name, saved.model_name),
            ("dataset_name", dataset_name, saved.dataset_name),
        ):
            if wanted is not None and wanted != held:
                raise ValueError(f"the index {path} holds {what} {held!r}, not {wanted!r}")
        return saved
    if not path.exists():
        raise FileNotFoundError(f"no saved index or embedding table at {path}")
    model_name, dataset_name = choose_selection(path, model_name, dataset_name)
    saved = saved_index_dir(path, model_name, dataset_name, name)
    if (saved / "index.json").exists():
        try:
            return load_index(saved, table=path)
        except StaleIndex:  # rebuild it as it was built (its kind and parameters)
            meta = json.loads((saved / "index.json").read_text())
            kind, params = meta["kind"], rebuild_params(meta)
    selection = load_selection(path, model_name, dataset_name)
    return build_index(selection, name, kind, params or {})


#: Characters a path may hold and still be pasted bare on a shell and read by Hydra's grammar.
_BARE = re.compile(r"[\w./+@%:-]+")


def build_command(table: str | os.PathLike[str], *overrides: str) -> str:
    """``img-search build table=<table> …`` as it can be pasted on a shell: a path that Hydra's
    grammar or the shell would read otherwise is quoted for both."""
    word = f"table={table}"
    if not _BARE.fullmatch(str(table)):
        hydra = str(table).replace('"', '\\"')
        word = shlex.quote(f'table="{hydra}"')
    return " ".join(["img-search build", word, *overrides])


def rebuild_params(meta: dict[str, Any]) -> dict[str, Any]:
    """The parameters to build a stale index again with: as recorded, but an IVF's ``nlist``
    chosen again for the new row count."""
    params = dict(meta.get("params") or {})
    if meta.get("kind") == "faiss_ivf":
        params["nlist"] = None
    return params


def index_specs(specs: dict[str, Any] | Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """``indexes`` config group entries → {name: (kind, params)}, validated before any work."""
    result = {}
    for name, spec in dict(specs or {}).items():
        options = dict(spec or {})
        kind = options.pop("kind", None)
        if kind not in INDEX_KINDS:
            raise UnknownNameError(
                f"indexes.{name}: unknown kind {kind!r}; registered: {', '.join(sorted(INDEX_KINDS))}"
            )
        result[str(name)] = (str(kind), options)
    if not result:
        raise ValueError("no index configured: choose some with indexes=[flat,faiss_hnsw,...]")
    return result


def build_all(
    table: str,
    specs: Mapping[str, Mapping[str, Any]],
    model_name: str | None = None,
    dataset_name: str | None = None,
) -> list[SavedIndex]:
    """Every configured index of one (model, dataset) selection, each saved next to the table."""
    selection = load_selection(table, model_name, dataset_name)
    built = []
    for name, (kind, params) in index_specs(specs).items():
        saved = build_index(selection, name, kind, params)
        log.info(
            "built %s (%s) in %.2f s → %s", name, kind, saved.meta["build_seconds"], saved.path
        )
        built.append(saved)
    return built
