"""What the server holds: each table's index, query encoder, row details and image sources.

Everything is loaded once, at start-up, so a request only encodes its query
(when it has one) and searches. Items are reached only by their ids; a path
never comes from a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from img_search.data import get_dataset
from img_search.data.base import ImageDataset
from img_search.embedding import Encoder
from img_search.search.evaluation import image_of_caption
from img_search.search.indexes import SavedIndex, open_index
from img_search.search.query_encoder import load_query_encoder
from img_search.search.tables import CAPTION_COLUMNS, UnknownItem
from img_search.store import read_metadata, read_table
from img_search.store import schema as S
from img_search.store.reader import table_columns

log = logging.getLogger(__name__)


class ItemImages:
    """The raw image of an item id in its dataset (folder file or Hub/Parquet bytes), for thumbnails."""

    def __init__(self, dataset: ImageDataset) -> None:
        self.dataset = dataset
        self._position: dict[str, int] | None = None
        self._lock = threading.Lock()  # the page asks for a dozen thumbnails at once

    def source(self, item_id: str) -> Any:
        if self._position is None:
            with self._lock:
                if self._position is None:
                    self.dataset.build()
                    self._position = {i: p for p, i in enumerate(self.dataset.item_ids())}
        position = self._position.get(item_id)
        if position is None:
            raise UnknownItem(f"no image {item_id!r} in dataset {self.dataset.name}")
        return self.dataset.get(position).source


def item_images_of(table: Path, dataset_name: str) -> ItemImages | None:
    """Rebuild the dataset an image table was embedded from (None when it cannot be read here)."""
    metadata = read_metadata(table)
    spec = dict(((metadata.get("config") or {}).get("datasets") or {}).get(dataset_name) or {})
    described = (metadata.get("datasets") or {}).get(dataset_name) or {}
    if not spec:
        return None
    if described.get("path") and Path(str(described["path"])).exists():
        spec["path"] = described["path"]  # absolute, so the server may run from anywhere
    if spec.get("streaming"):
        spec["streaming"] = False  # thumbnails need random access
    try:
        return ItemImages(get_dataset(spec, name=dataset_name))
    except Exception as exc:  # a dataset that cannot be opened here only loses its thumbnails
        log.warning("no thumbnails for %s (%s): %s", dataset_name, table, exc)
        return None


@dataclass
class LoadedTable:
    """One (model, dataset) of a table, ready to answer queries."""

    name: str
    index: SavedIndex
    kind: str  # "image" or "caption"
    encoder: Encoder | None
    details: dict[str, np.ndarray] = field(default_factory=dict)  # caption columns by row
    row_of: dict[str, int] = field(default_factory=dict)
    images: ItemImages | None = None
    #: caption tables: the loaded image table their images come from
    image_table: str | None = None

    @property
    def rows(self) -> int:
        return len(self.index.ids)

    @property
    def dim(self) -> int:
        return int(self.index.meta["dim"])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "model_name": self.index.model_name,
            "dataset_name": self.index.dataset_name,
            "rows": self.rows,
            "dim": self.dim,
            "index": self.index.meta["kind"],
            "text_search": bool(self.encoder and self.encoder.supports_texts),
            "image_search": bool(self.encoder and self.encoder.supports_images),
            "image_table": self.image_table,
        }


def load_table(
    name: str,
    spec: Mapping[str, Any],
    device: str = "cpu",
    encoders: dict[str, Encoder] | None = None,
) -> LoadedTable:
    """Open (or build) the index of one configured table and load its query encoder.

    ``encoders`` (by model fingerprint) lets tables of one model, say its
    image and caption tables, share one loaded model.
    """
    index = open_index(
        str(spec["table"]),
        spec.get("model_name"),
        spec.get("dataset_name"),
        name=str(spec.get("index", "flat")),
        kind=str(spec.get("index", "flat")),
    )
    kind = str(index.meta.get("table_kind", "image"))
    identity = index.meta.get("identity") or {}
    encoders = {} if encoders is None else encoders
    key = str(identity.get("fingerprint") or f"{index.table}:{index.model_name}")
    if key not in encoders:
        encoders[key] = load_query_encoder(
            index.model_name, index.meta.get("model_spec") or {}, identity, device=device
        )
    encoder = encoders[key]
    names = table_columns(index.table)
    columns = [c for c in CAPTION_COLUMNS if c in names]
    details: dict[str, np.ndarray] = {}
    if columns:
        table = read_table(
            index.table,
            columns=[S.ID, *columns],
            filters=(
                (pc.field(S.MODEL) == index.model_name)
                & (pc.field(S.DATASET) == index.dataset_name)
            ),
        )
        order = {item: row for row, item in enumerate(table.column(S.ID).to_pylist())}
        positions = np.array([order[str(i)] for i in index.ids])
        details = {
            c: np.asarray(table.column(c).to_pylist(), dtype=object)[positions] for c in columns
        }
    loaded = LoadedTable(
        name=name,
        index=index,
        kind=kind,
        encoder=encoder,
        details=details,
        row_of={str(item): row for row, item in enumerate(index.ids)},
    )
    if kind == "image":
        loaded.images = item_images_of(index.table, index.dataset_name)
    return loaded


class Catalog:
    """The loaded tables by name, and which image shows a caption."""

    def __init__(self, tables: Mapping[str, LoadedTable]) -> None:
        if not tables:
            raise ValueError(
                "no table to serve: give tables.images.table=<table.parquet> "
                "(or +tables.<name>.table=... for more)"
            )
        self.tables = dict(tables)
        #: caption table → (image table, image row of each caption row, −1 where none)
        self._images_of: dict[str, tuple[str, np.ndarray]] = {}
        for captions in self.tables.values():
            if captions.kind == "caption" and "image_id" in captions.details:
                self._link_images(captions)

    def _link_images(self, captions: LoadedTable) -> None:
        """Show a caption with its image from the loaded image table that holds most of them."""
        best: tuple[str, np.ndarray] | None = None
        for images in self.tables.values():
            if images.kind != "image":
                continue
            rows = image_of_caption(
                images.index.ids, captions.details["image_id"], captions.details.get("image")
            )
            if (rows >= 0).any() and (best is None or (rows >= 0).sum() > (best[1] >= 0).sum()):
                best = (images.name, rows)
        if best is not None:
            captions.image_table = best[0]
            self._images_of[captions.name] = best

    def get(self, name: str | None) -> LoadedTable:
        if name is None:
            return next(iter(self.tables.values()))
        if name not in self.tables:
            raise KeyError(name)
        return self.tables[name]

    def image_item_of_caption(self, captions: LoadedTable, row: int) -> tuple[str, str] | None:
        """(image table, item id) of a caption row's image, when a loaded image table has it."""
        linked = self._images_of.get(captions.name)
        if linked is None or linked[1][row] < 0:
            return None
        name, rows = linked
        return name, str(self.tables[name].index.ids[rows[row]])


def load_catalog(specs: Mapping[str, Mapping[str, Any]], device: str = "cpu") -> Catalog:
    tables, encoders = {}, {}
    for name, spec in specs.items():
        if not spec or not spec.get("table"):
            continue  # tables.<name>.table=null leaves a configured table out
        tables[name] = load_table(name, spec, device, encoders)
        log.info("loaded %s: %s", name, tables[name].describe())
    return Catalog(tables)
