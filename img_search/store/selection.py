"""One (model, dataset) selection of an embedding table: the one reader of its rows.

Search and evaluation always work on one model and one dataset at a time:
vectors of two models are not comparable, and two datasets have separate id
spaces. When a table holds a single model or dataset it is chosen without
asking; otherwise the error lists what the table holds.

Every in-memory read of a selection goes through ``_read``: the rows of
either table form (``store.reader``), with the vectors taken through the one
null/NaN policy (``store.vectors``). Its callers are the selection with
everything known of its rows (``load_selection``: indexes, evaluation, the
Python API), ``read_embeddings`` (public), one item's vector (``vector_of``),
the captions of given ids (``captions_of``: hits and the server) and the rows
as stored (``selection_rows``: ``to_pandas``). Exact search over tables larger
than memory streams the same selection block by block (``store.blocks``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from img_search.store import schema as S
from img_search.store.reader import (
    open_table,
    read_metadata,
    read_table,
    selection_filter,
    table_columns,
)
from img_search.store.vectors import LeftOut, usable_rows

#: Up to this many ids are filtered while the table is scanned; more (a server's every row) are
#: picked from the whole selection once it is read.
FILTERED_IDS = 1_000


class UnknownItem(ValueError):
    """An item id that the selection does not hold."""


@dataclass
class SelectionInfo:
    """What a table's metadata says of one (model, dataset) of it, without reading its rows."""

    path: Path
    model_name: str
    dataset_name: str
    kind: str  # "image" or "caption"
    identity: dict[str, Any]  # the model identity recorded by the pipeline
    model_spec: dict[str, Any]  # the resolved encoder spec, to rebuild the query encoder
    dataset: dict[str, Any]  # the dataset description recorded by the pipeline


@dataclass
class TableSelection:
    """Rows of one (model, dataset) of a table: ``ids[i]`` ↔ ``vectors[i]``."""

    path: Path
    model_name: str
    dataset_name: str
    kind: str  # "image" or "caption"
    ids: np.ndarray
    vectors: np.ndarray
    identity: dict[str, Any]  # the model identity recorded by the pipeline
    model_spec: dict[str, Any]  # the resolved encoder spec, to rebuild the query encoder
    dataset: dict[str, Any]  # the dataset description recorded by the pipeline
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # caption, image_id, image
    #: rows whose vector is null or not finite: in none of the arrays above (``store.vectors``)
    left_out: LeftOut = field(default_factory=LeftOut)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def file_path(self, item_id: str) -> str | None:
        return file_path_of(self.dataset, self.kind, item_id)


@dataclass
class EmbeddingMatrix:
    """Rows of one table selection: ``ids[i]`` is the item of ``vectors[i]``."""

    ids: np.ndarray  # object array of str
    vectors: np.ndarray  # (n, dim) float32
    left_out: LeftOut = field(default_factory=LeftOut)  # rows without a usable vector

    def __len__(self) -> int:
        return len(self.ids)


def file_path_of(dataset: dict[str, Any], table_kind: str, item_id: str) -> str | None:
    """Where an item's image file is, for sources that are folders of files (else None)."""
    root = dataset.get("path")
    if table_kind == "image" and dataset.get("kind") == "image_folder" and root:
        return str(Path(root) / item_id)
    return None


def table_contents(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """The distinct model and dataset names of a table, without reading its vectors."""
    pairs = pair_rows(path)
    return {
        "models": sorted({model for model, _ in pairs}),
        "datasets": sorted({dataset for _, dataset in pairs}),
    }


def pair_rows(path: str | os.PathLike[str]) -> dict[tuple[str, str], int]:
    """Rows of each (model, dataset) the table holds, counted from its name columns."""
    names = _read(path, None, None, [S.MODEL, S.DATASET]).table
    counts = names.group_by([S.MODEL, S.DATASET]).aggregate([([], "count_all")]).to_pylist()
    return {(row[S.MODEL], row[S.DATASET]): int(row["count_all"]) for row in counts}


def row_count(
    path: str | os.PathLike[str], model_name: str | None = None, dataset_name: str | None = None
) -> int:
    """Rows of the table (of one selection, when named), left-out ones included: from the Parquet
    metadata where no filter is given."""
    return open_table(path).count_rows(filter=selection_filter(model_name, dataset_name))


def selection_info(
    path: str | os.PathLike[str],
    model_name: str | None = None,
    dataset_name: str | None = None,
) -> SelectionInfo:
    """The metadata of one (model, dataset) of the table at ``path``; refuses an ambiguous choice."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"embedding table not found: {path}")
    metadata = read_metadata(path)
    model_name, dataset_name = choose_selection(path, model_name, dataset_name)
    config = metadata.get("config") or {}
    return SelectionInfo(
        path=path,
        model_name=model_name,
        dataset_name=dataset_name,
        kind=metadata.get("kind", "image"),
        identity=(metadata.get("models") or {}).get(model_name) or {},
        model_spec=recorded_model_spec(metadata, model_name),
        dataset=_dataset_description(metadata, config, dataset_name),
    )


def load_selection(
    path: str | os.PathLike[str],
    model_name: str | None = None,
    dataset_name: str | None = None,
) -> TableSelection:
    """Read one (model, dataset) of the table at ``path``; refuses an ambiguous choice.

    Rows whose vector is null or not finite are left out of it, and named in a
    warning (``store.vectors``); a selection of nothing else is refused.
    """
    info = selection_info(path, model_name, dataset_name)
    columns = [S.ID, *_caption_columns(info.path)]
    rows = _read(info.path, info.model_name, info.dataset_name, columns, vectors=True)
    if rows.read == 0:
        raise ValueError(
            f"{info.path} holds no rows for model {info.model_name!r} and dataset "
            f"{info.dataset_name!r}"
        )
    source = f"{info.path} ({info.model_name} × {info.dataset_name})"
    rows.left_out.refuse_if_all(source, rows.read)
    rows.left_out.warn(source)
    return TableSelection(
        path=info.path,
        model_name=info.model_name,
        dataset_name=info.dataset_name,
        kind=info.kind,
        ids=_objects(rows.table.column(S.ID)),
        vectors=rows.vectors,
        identity=info.identity,
        model_spec=info.model_spec,
        dataset=info.dataset,
        extra={c: _objects(rows.table.column(c)) for c in columns[1:]},
        left_out=rows.left_out,
    )


def read_embeddings(
    path: str | os.PathLike[str],
    model_name: str | None = None,
    dataset_name: str | None = None,
    *,
    memory_map: bool = True,
) -> EmbeddingMatrix:
    """ids and vectors of one (model, dataset) selection of a table of either form; both filters optional.

    Rows whose vector is null or not finite are left out, with a warning that
    names them (``store.vectors``).
    """
    rows = _read(path, model_name, dataset_name, [S.ID], vectors=True, memory_map=memory_map)
    rows.left_out.warn(str(path))
    return EmbeddingMatrix(
        ids=_objects(rows.table.column(S.ID)), vectors=rows.vectors, left_out=rows.left_out
    )


def recorded_model_spec(metadata: dict[str, Any], model_name: str) -> dict[str, Any]:
    """How the model was configured: the job's resolved spec (or, for older tables, the config)."""
    job = (metadata.get("job") or {}).get("models") or {}
    config = (metadata.get("config") or {}).get("models") or {}
    return dict(job.get(model_name) or config.get(model_name) or {})


def choose_selection(
    path: Path, model_name: str | None, dataset_name: str | None
) -> tuple[str, str]:
    """The (model, dataset) to use: as given, or the only one the table holds."""
    contents = table_contents(path)
    return (
        _choose("model_name", model_name, contents["models"], path),
        _choose("dataset_name", dataset_name, contents["datasets"], path),
    )


def _dataset_description(metadata: dict, config: dict, name: str) -> dict[str, Any]:
    described = (metadata.get("datasets") or {}).get(name)
    if described:
        return dict(described)
    text = config.get("text_dataset") or {}
    return dict(text) if text.get("name") == name else {}


def _choose(what: str, wanted: str | None, available: list[str], path: Path) -> str:
    if wanted is not None:
        if wanted not in available:
            raise ValueError(
                f"{path} has no {what} {wanted!r}; it holds {', '.join(available) or 'nothing'}"
            )
        return wanted
    if len(available) == 1:
        return available[0]
    raise ValueError(
        f"{path} holds several values of {what} ({', '.join(available)}): choose one with {what}=..."
    )


def vector_of(
    path: str | os.PathLike[str], model_name: str, dataset_name: str, item_id: str
) -> np.ndarray:
    """The stored vector of one item (for "more like this"); one that is left out cannot be a query."""
    where = pc.field(S.ID) == item_id
    rows = _read(path, model_name, dataset_name, [S.ID], where=where, vectors=True)
    if rows.read == 0:
        raise UnknownItem(
            f"no item with id {item_id!r} for {model_name} × {dataset_name} in {path}"
        )
    if not len(rows.vectors):
        reason = rows.left_out.reasons()[item_id]
        raise ValueError(
            f"item {item_id!r} of {model_name} × {dataset_name} in {path} is left out of "
            f"search: {reason}"
        )
    return rows.vectors[0]


def captions_of(
    path: str | os.PathLike[str],
    model_name: str,
    dataset_name: str,
    ids: Sequence[str] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The caption columns of a selection's rows (``CAPTION_COLUMNS`` the table has; none for an
    image table) as object arrays: aligned with ``ids`` (None where the selection has no such
    id), or without ``ids`` every row in table order, its ``id`` included.

    The one fetch of captions by id: a query's hits (``search.hits``) and the
    server's rows, in index order (``serve.catalog``).
    """
    columns = _caption_columns(path)
    if not columns:
        return {}
    if ids is None:
        rows = _read(path, model_name, dataset_name, [S.ID, *columns]).table
        return {c: _objects(rows.column(c)) for c in (S.ID, *columns)}
    wanted = [str(item) for item in ids]
    where = None
    if len(wanted) <= FILTERED_IDS:
        where = pc.field(S.ID).isin(pa.array(wanted, pa.string()))
    rows = _read(path, model_name, dataset_name, [S.ID, *columns], where=where).table
    row_of = {item: row for row, item in enumerate(rows.column(S.ID).to_pylist())}
    positions = pa.array([row_of.get(item) for item in wanted], pa.int64())
    return {c: _objects(rows.column(c).take(positions)) for c in columns}


def selection_rows(
    path: str | os.PathLike[str], model_name: str | None, dataset_name: str | None
) -> pa.Table:
    """Every row of a selection as stored, every column (``embedding`` too, left-out rows too)."""
    return _read(path, model_name, dataset_name, None).table


def _caption_columns(path: str | os.PathLike[str]) -> list[str]:
    names = table_columns(path)
    return [c for c in S.CAPTION_COLUMNS if c in names]


def _objects(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column as a numpy array; strings as an object array of str (a fixed-width str array
    would pad every id to the longest)."""
    return column.to_numpy(zero_copy_only=False)


@dataclass
class _Rows:
    """What ``_read`` read of a selection."""

    #: the columns read (but ``embedding`` when the vectors were asked for: those are in
    #: ``vectors``, and the rows without a usable one are left out here too)
    table: pa.Table
    vectors: np.ndarray | None  # (rows of table, dim) float32, C-contiguous, the caller's own
    left_out: LeftOut  # rows whose vector is null or not finite
    read: int  # rows that matched, left-out ones included


def _read(
    path: str | os.PathLike[str],
    model_name: str | None,
    dataset_name: str | None,
    columns: Sequence[str] | None,
    *,
    where: pc.Expression | None = None,
    vectors: bool = False,
    memory_map: bool = True,
) -> _Rows:
    """THE read of a selection (either table form, either filter optional), in table order.

    ``columns`` as stored (None: all of them); ``where``: only the rows it
    holds for. ``vectors``: the embedding too, as one float32 matrix of the
    rows that have a usable vector; the others are left out of ``table`` as
    well, by the one policy (``store.vectors.usable_rows``).
    """
    selected = selection_filter(model_name, dataset_name)
    if where is not None:
        selected = where if selected is None else selected & where
    names = None if columns is None else list(columns)
    if vectors and names is not None:
        names = [S.ID, S.EMBEDDING, *(c for c in names if c not in (S.ID, S.EMBEDDING))]
    table = read_table(path, columns=names, filters=selected, memory_map=memory_map)
    if not vectors:
        return _Rows(table, None, LeftOut(), table.num_rows)
    usable = usable_rows(table.column(S.EMBEDDING), table.column(S.ID), float32=True)
    kept = table.drop_columns([S.EMBEDDING])
    if not usable.complete:
        kept = kept.filter(pa.array(usable.keep))
    matrix = usable.vectors  # a read-only view of Arrow's only when nothing was converted
    owned = matrix if matrix.flags.writeable else matrix.copy()
    return _Rows(kept, owned, usable.left_out, table.num_rows)
