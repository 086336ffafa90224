"""What the server holds: each table's index, query encoder, row details and image sources.

Everything is loaded and checked once, at start-up, so a request only encodes
its query (when it has one) and searches. A table that cannot be searched
correctly is refused then, with one line: vectors of another dimension than
its model's, duplicate ids, no rows, no row with a usable vector. Rows whose
vector is null or not finite are not in the index (``store.vectors``, the
policy of every reader and index): they are listed (log and ``/api/tables``)
and never answered nor searched from. Items are reached only by their ids; a
path never comes from a request.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from img_search.embedding import Encoder
from img_search.search.indexes import SavedIndex, open_index
from img_search.search.table_encoder import encoder_of
from img_search.serve.thumbnails import IMAGE_SOURCE_WAIT_S, ItemImages, item_images_of
from img_search.store import is_table
from img_search.store.captions import image_of_caption
from img_search.store.selection import captions_of, row_count
from img_search.store.vectors import LeftOut, NoUsableRows

log = logging.getLogger(__name__)


@dataclass
class LoadedTable:
    """One (model, dataset) of a table, ready to answer queries."""

    name: str
    index: SavedIndex
    kind: str  # "image" or "caption"
    encoder: Encoder | None
    #: caption columns (``store.selection.captions_of``) in index order; none for image tables
    details: dict[str, np.ndarray] = field(default_factory=dict)
    row_of: dict[str, int] = field(default_factory=dict)  # searchable items only
    #: items whose vector is null or not finite, id → reason: never returned, never searched from
    left_out: dict[str, str] = field(default_factory=dict)
    images: ItemImages | None = None
    #: caption tables: the loaded image table their images come from
    image_table: str | None = None

    @property
    def rows(self) -> int:
        return len(self.index.ids)

    @property
    def dim(self) -> int:
        return int(self.index.meta["dim"])

    def reads(self, side: str) -> bool:
        """Whether its model encodes ``side`` queries: "text" or "image"."""
        return self.encoder is not None and self.encoder.has_side(side)

    def holds(self, item_id: str) -> bool:
        """Whether the table has this item (searchable or left out)."""
        return item_id in self.row_of or item_id in self.left_out

    def top_k(
        self, vector: np.ndarray, k: int, exclude: str | None = None, where: Any = None
    ) -> list[tuple[int, str, float]]:
        """(position, id, score) of the ``k`` best searchable items for one query vector.

        ``where``: a filter parsed by ``index.parse_filter`` (milvus indexes).
        """
        return self.index.top_k(vector, k, exclude, where)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "model_name": self.index.model_name,
            "dataset_name": self.index.dataset_name,
            "rows": self.rows,
            "dim": self.dim,
            "index": self.index.meta["kind"],
            "filters": self.index.filters,  # the index takes filter= (milvus)
            "text_search": self.reads("text"),
            "image_search": self.reads("image"),
            "image_table": self.image_table,
            "left_out": sorted(self.left_out)[:20],  # null or non-finite vectors, first 20 ids
        }


def load_table(
    name: str,
    spec: Mapping[str, Any],
    device: str = "cpu",
    encoders: dict[str, Encoder] | None = None,
    trust_remote_code: bool = False,
) -> LoadedTable:
    """Open (or build) the index of one configured table, check it, and load its query encoder.

    ``encoders`` (by model fingerprint) lets tables of one model, say its
    image and caption tables, share one loaded model. ``trust_remote_code`` is
    the serve config's, never the table's: a table cannot make the server run
    code that its checkpoint ships.
    """
    refuse_empty(name, Path(str(spec["table"])))
    try:
        index = open_index(
            str(spec["table"]),
            spec.get("model_name"),
            spec.get("dataset_name"),
            name=str(spec.get("index", "flat")),
            kind=str(spec.get("index", "flat")),
        )
    except NoUsableRows as exc:
        raise NoUsableRows(f"table {name}: {exc}") from None
    row_of = unique_rows(name, index)
    LeftOut.of(index.left_out).warn(f"table {name}")
    kind = str(index.meta.get("table_kind", "image"))
    encoder = encoder_of(index, device=device, trust_remote_code=trust_remote_code, loaded=encoders)
    check_dimension(name, index, encoder)
    loaded = LoadedTable(
        name=name,
        index=index,
        kind=kind,
        encoder=encoder,
        details=captions_of(index.table, index.model_name, index.dataset_name, index.ids),
        row_of=row_of,
        left_out=index.left_out,
    )
    if kind == "image":
        loaded.images = item_images_of(name, index.table, index.dataset_name)
    return loaded


def refuse_empty(name: str, path: Path) -> None:
    """A table without rows: say so (its model and dataset cannot even be named)."""
    if (path / "index.json").is_file() or not is_table(path):
        return  # a saved index, or not a table: open_index says what it is
    if row_count(path) == 0:
        raise ValueError(
            f"table {name}: {path} holds no rows (was its dataset empty?); "
            f"embed something into it, or leave it out with tables.{name}.table=null"
        )


def unique_rows(name: str, index: SavedIndex) -> dict[str, int]:
    """Row of each id; an id held twice makes "more like this" and thumbnails ambiguous: refused."""
    row_of = {str(item): row for row, item in enumerate(index.ids)}
    if len(row_of) != len(index.ids):
        counts = Counter(str(item) for item in index.ids)
        twice = [item for item, count in counts.items() if count > 1]
        raise ValueError(
            f"table {name}: some ids appear more than once in {index.table} "
            f"({', '.join(map(repr, twice[:3]))}{', …' if len(twice) > 3 else ''}); "
            "each item must be embedded once: embed it again into a new table"
        )
    return row_of


def check_dimension(name: str, index: SavedIndex, encoder: Encoder) -> None:
    """The table's vectors must have the model's dimension, or every query fails or lies.

    The dimension comes from one probe through the model (the table's own
    metadata could be wrong too); the probe also warms the model up.
    """
    dim = encoder.dim
    if dim is None:
        if encoder.has_side("text"):
            probe = encoder.encode(["a probe"], side="text")
        else:
            probe = encoder.encode([Image.new("RGB", (64, 64), (128, 128, 128))], side="image")
        dim = int(probe.vectors.shape[-1])
    if dim != index.meta["dim"]:
        raise ValueError(
            f"table {name}: its vectors have {index.meta['dim']} dimensions, but model "
            f"{index.model_name} makes {dim}: they were not made by this model; "
            "embed the table again"
        )


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

    def first(self, side: str) -> LoadedTable | None:
        """The first table (in config order) whose model reads ``side`` queries ("text", "image")."""
        return next((table for table in self.tables.values() if table.reads(side)), None)

    def image_item_of_caption(self, captions: LoadedTable, row: int) -> tuple[str, str] | None:
        """(image table, item id) of a caption row's image, when a loaded image table has it."""
        linked = self._images_of.get(captions.name)
        if linked is None or linked[1][row] < 0:
            return None
        name, rows = linked
        return name, str(self.tables[name].index.ids[rows[row]])

    def close(self) -> None:
        """Let go of index connections (a milvus index's client, and Milvus Lite's file)."""
        for table in self.tables.values():
            table.index.close()

    def wait_for_images(self, timeout: float = IMAGE_SOURCE_WAIT_S) -> None:
        """Give the image sources building in the background up to ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        for table in self.tables.values():
            if table.images is not None:
                table.images.ready.wait(max(0.0, deadline - time.monotonic()))


def load_catalog(
    specs: Mapping[str, Mapping[str, Any]],
    device: str = "cpu",
    trust_remote_code: bool = False,
    image_wait: float = IMAGE_SOURCE_WAIT_S,
) -> Catalog:
    """Load every configured table; a table that fails a check stops start-up with one line.

    Start-up then waits up to ``image_wait`` seconds for the thumbnail sources,
    so that local folders are ready before the first request; a slower Hub
    dataset goes on building in the background.
    """
    tables, encoders = {}, {}
    for name, spec in specs.items():
        if not spec or not spec.get("table"):
            continue  # tables.<name>.table=null leaves a configured table out
        tables[name] = load_table(name, spec, device, encoders, trust_remote_code)
    catalog = Catalog(tables)  # links each caption table to its image table
    for name, table in catalog.tables.items():
        log.info("loaded %s: %s", name, table.describe())  # as /api/tables describes it
    catalog.wait_for_images(image_wait)
    return catalog
