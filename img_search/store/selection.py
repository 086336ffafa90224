"""One (model, dataset) selection of an embedding table, with what is known about its rows.

Search and evaluation always work on one model and one dataset at a time:
vectors of two models are not comparable, and two datasets have separate id
spaces. When a table holds a single model or dataset it is chosen without
asking; otherwise the error lists what the table holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from img_search.store import read_metadata, read_table
from img_search.store import schema as S
from img_search.store.reader import selection_filter, table_columns
from img_search.store.vectors import LeftOut, usable_rows


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


def file_path_of(dataset: dict[str, Any], table_kind: str, item_id: str) -> str | None:
    """Where an item's image file is, for sources that are folders of files (else None)."""
    root = dataset.get("path")
    if table_kind == "image" and dataset.get("kind") == "image_folder" and root:
        return str(Path(root) / item_id)
    return None


def table_contents(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """The distinct model and dataset names of a table, without reading its vectors."""
    table = read_table(path, columns=[S.MODEL, S.DATASET])
    return {
        "models": sorted(pc.unique(table.column(S.MODEL)).to_pylist()),
        "datasets": sorted(pc.unique(table.column(S.DATASET)).to_pylist()),
    }


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
    names = table_columns(info.path)
    columns = [S.ID, S.EMBEDDING, *(c for c in S.CAPTION_COLUMNS if c in names)]
    table = read_table(
        info.path, columns=columns, filters=selection_filter(info.model_name, info.dataset_name)
    )
    if table.num_rows == 0:
        raise ValueError(
            f"{info.path} holds no rows for model {info.model_name!r} and dataset "
            f"{info.dataset_name!r}"
        )
    usable = usable_rows(table.column(S.EMBEDDING), table.column(S.ID))
    source = f"{info.path} ({info.model_name} × {info.dataset_name})"
    usable.left_out.refuse_if_all(source, table.num_rows)
    usable.left_out.warn(source)
    if not usable.complete:
        table = table.filter(pa.array(usable.keep))
    return TableSelection(
        path=info.path,
        model_name=info.model_name,
        dataset_name=info.dataset_name,
        kind=info.kind,
        # object arrays of str: a fixed-width str array pads every id to the longest
        ids=table.column(S.ID).to_numpy(zero_copy_only=False),
        vectors=np.array(usable.vectors, dtype=np.float32, order="C"),  # (a copy of Arrow's)
        identity=info.identity,
        model_spec=info.model_spec,
        dataset=info.dataset,
        extra={
            c: table.column(c).to_numpy(zero_copy_only=False)
            for c in S.CAPTION_COLUMNS
            if c in table.column_names
        },
        left_out=usable.left_out,
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


def vector_of(path: str | os.PathLike[str], model_name: str, dataset_name: str, item_id: str):
    """The stored vector of one item (for "more like this"); one that is left out cannot be a query."""
    table = read_table(
        path,
        columns=[S.ID, S.EMBEDDING],
        filters=selection_filter(model_name, dataset_name) & (pc.field(S.ID) == item_id),
    )
    if table.num_rows == 0:
        raise UnknownItem(
            f"no item with id {item_id!r} for {model_name} × {dataset_name} in {path}"
        )
    usable = usable_rows(table.column(S.EMBEDDING), table.column(S.ID))
    if not usable.keep[0]:
        reason = usable.left_out.reasons()[item_id]
        raise ValueError(
            f"item {item_id!r} of {model_name} × {dataset_name} in {path} is left out of "
            f"search: {reason}"
        )
    return np.array(usable.vectors[0], dtype=np.float32)


def row_details(
    path: str | os.PathLike[str], model_name: str, dataset_name: str, ids: list[str]
) -> dict[str, dict[str, str]]:
    """Caption, image and image id of the given rows (whichever the table has), by id."""
    names = table_columns(path)
    columns = [c for c in S.CAPTION_COLUMNS if c in names]
    if not columns or not ids:
        return {}
    table = read_table(
        path,
        columns=[S.ID, *columns],
        filters=selection_filter(model_name, dataset_name) & pc.field(S.ID).isin(ids),
    )
    return {row.pop(S.ID): row for row in table.to_pylist()}
