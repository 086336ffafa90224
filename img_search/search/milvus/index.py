"""``milvus``: the index kind whose vectors live in a Milvus collection.

Behind ``VectorIndex`` it is built, saved, reloaded, searched and benchmarked
like the other kinds; the index folder next to the table holds the ids, the
model identity and ``milvus.json`` (where the collection is), never vectors.
By default the collection is in the table's Milvus Lite folder
(``TableLayout.milvus_lite_file``); ``uri=http://host:19530`` (and ``token``)
names a server or cluster instead. The collection's contents are kept in
step by ``collection.CollectionSync``; filters are parsed by ``filters``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from img_search.search.kinds import VectorIndex
from img_search.search.milvus.collection import (
    MAX_LENGTH,
    VECTOR,
    Collection,
    CollectionRows,
    CollectionSync,
    collection_name,
    same_model,
)
from img_search.search.milvus.connection import (
    MilvusError,
    check_installed,
    check_uri,
    connect,
    disconnect,
    is_lite,
)
from img_search.search.milvus.filters import Filter, id_filter, parse_filter
from img_search.store import TableLayout
from img_search.store.schema import CAPTION_COLUMNS
from img_search.store.selection import TableSelection

INDEX_TYPES = ("AUTOINDEX", "HNSW", "IVF_FLAT", "FLAT")
METRICS = ("IP", "COSINE")  # the same order on unit vectors; larger is closer
#: The caption columns a collection of a caption table holds (and filters on).
CAPTION_FIELDS = [c for c in CAPTION_COLUMNS if c in MAX_LENGTH]


class MilvusIndex(VectorIndex):
    kind = "milvus"
    file_name = "milvus.json"
    filters = True
    defaults: ClassVar[dict[str, Any]] = {
        "uri": None,  # None: the table's Milvus Lite file (TableLayout.milvus_lite_file)
        "token": None,  # never saved; MILVUS_TOKEN when not given
        "collection": None,  # None: <table stem>_<model>_<dataset>[_<index name unless milvus>]
        "index_type": "AUTOINDEX",
        "index_params": {},  # HNSW: M, efConstruction; IVF_FLAT: nlist
        "search_params": {},  # HNSW: ef; IVF_FLAT: nprobe
        "metric": "IP",
        "batch_size": 1000,
        "timeout": 10.0,  # seconds to reach a server, and for each call
        "index_wait": 600.0,  # seconds a build waits for Milvus to finish indexing
    }

    def __init__(self, dim: int, **params: Any) -> None:
        super().__init__(dim, **params)
        self.token = self.params.pop("token", None) or os.environ.get("MILVUS_TOKEN")
        self.params["index_type"] = str(self.params["index_type"]).upper()
        self.params["metric"] = str(self.params["metric"]).upper()
        for key, allowed in (("index_type", INDEX_TYPES), ("metric", METRICS)):
            if self.params[key] not in allowed:
                raise ValueError(
                    f"indexes.milvus.{key}={self.params[key]} is not one of {', '.join(allowed)}"
                )
        check_uri(self.params["uri"])
        check_installed(lite=self.params["uri"] is None or is_lite(str(self.params["uri"])))
        self.client: Any = None
        self.uri = ""  # where the collection is, once placed
        self.lite_file: str | None = None  # the default Lite file's name, next to the index folder
        self.collection = ""
        self.fields = list(MAX_LENGTH)[:3]
        self.identity: dict[str, Any] = {}  # of the model that made the vectors
        self.ids: np.ndarray = np.array([], dtype=object)
        self._position: dict[str, int] | None = None
        self._scratch: str | None = None  # a temporary Lite folder (the ANN benchmark's)

    @property
    def _held(self) -> Collection:
        """The collection this index is placed on, through its client."""
        return Collection(self.client, self.uri, self.collection, float(self.params["timeout"]))

    # -- building --

    def add(self, vectors: np.ndarray) -> None:
        """The ANN benchmark's build: rows named by position, in a scratch Lite file unless a uri is set."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.params["uri"] is None:
            self._scratch = tempfile.mkdtemp(prefix="img_search-milvus-")
            self._place(Path(self._scratch) / "ann.parquet", "ann", f"{len(vectors)}x{self.dim}")
        else:
            self._place(None, "ann", f"{len(vectors)}x{self.dim}")
        ids = np.arange(len(vectors)).astype(str).astype(object)
        # no model here: the vectors themselves say whether a collection of the same size holds them
        identity = {"fingerprint": hashlib.sha1(vectors.tobytes()).hexdigest()}
        self._sync(
            CollectionRows(ids, vectors, {"model_name": "ann", "dataset_name": "ann"}), identity
        )
        self.attach(ids)

    def add_selection(self, selection: TableSelection, name: str) -> None:
        dataset = (
            selection.dataset_name if name == self.kind else f"{selection.dataset_name}_{name}"
        )
        self._place(selection.path, selection.model_name, dataset)
        scalars = {"model_name": selection.model_name, "dataset_name": selection.dataset_name}
        captions = {c: selection.extra[c] for c in CAPTION_FIELDS if c in selection.extra}
        rows = CollectionRows(selection.ids, selection.vectors, scalars, captions)
        self._sync(rows, selection.identity)

    def _place(self, table: Path | None, model_name: str, dataset_name: str) -> None:
        """Decide the uri and the collection name (from ``dataset_name`` as given), and connect."""
        uri = self.params["uri"]
        if uri is None and table is not None:
            lite = TableLayout(table).milvus_lite_file  # beside the index folders, as they are
            self.lite_file, uri = lite.name, str(lite)
        elif is_lite(str(uri)):  # a Lite file the user named: recorded as an absolute path
            uri = self.params["uri"] = os.path.abspath(str(uri))
        self.uri = str(uri)
        if not self.params["collection"]:
            table = table or Path(f"img_search_{model_name}")
            self.params["collection"] = collection_name(table, model_name, dataset_name)
        self.collection = str(self.params["collection"])
        self.client = connect(self.uri, self.token, float(self.params["timeout"]))

    def _sync(self, rows: CollectionRows, identity: dict[str, Any]) -> None:
        """Make the collection hold exactly these rows, in this index's layout."""
        self.fields, self.identity = rows.fields, identity
        layout = {
            "dim": self.dim,
            "fields": self.fields,
            "metric": self.params["metric"],
            "index_type": self.params["index_type"],
            "index_params": dict(self.params["index_params"] or {}),
        }
        sync = CollectionSync(
            self._held, layout, self.params["batch_size"], self.params["index_wait"]
        )
        self.count = sync.run(rows, identity)

    # -- saving and loading --

    def save(self, path: Path) -> None:
        where = {
            "uri": self.params["uri"],  # None: the Lite file below, found next to the index folder
            "lite_file": self.lite_file,
            "collection": self.collection,
            "fields": self.fields,
            "identity": self.identity,
        }
        (path / self.file_name).write_text(json.dumps(where, indent=2, default=str))

    def load(self, path: Path) -> None:
        where = json.loads((path / self.file_name).read_text())
        self.lite_file, self.fields = where.get("lite_file"), list(where["fields"])
        uri = where["uri"] or str(path.with_name(where["lite_file"]))
        self.params["collection"] = where["collection"]
        self.collection = str(where["collection"])
        self.uri = uri
        self.client = connect(uri, self.token, float(self.params["timeout"]))
        held = self._held
        with held.errors():
            recorded = held.properties()
            why = "has no collection" if recorded is None else None
            if recorded is not None and same_model(recorded, where.get("identity") or {}) is False:
                why = "now holds vectors of another model than this index's table in collection"
            if why is not None:
                self.close()
                raise MilvusError(
                    f"Milvus at {uri} {why} {self.collection}: build the index again "
                    f"(python -m img_search.search.build ... indexes=[milvus])"
                )
            held.load()
            self.count = held.count()

    def attach(self, ids: np.ndarray) -> None:
        self.ids, self._position = ids, None

    def close(self) -> None:
        if self.client is not None:
            disconnect(self.client, self.uri)
            self.client = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # -- searching --

    def parse_filter(self, text: str | None) -> Filter | None:
        return parse_filter(text, self.fields)

    def search(
        self, queries: np.ndarray, k: int, where: Filter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        if k <= 0:
            return scores, positions
        if self._position is None:
            self._position = {str(item): row for row, item in enumerate(self.ids)}
        held = self._held
        with held.errors():
            found = self.client.search(
                self.collection,
                data=list(queries),
                limit=k,
                search_params={
                    "metric_type": self.params["metric"],
                    "params": dict(self.params["search_params"] or {}),
                },
                timeout=held.timeout,
                **held.filter_args(where),
            )
        for row, hits in enumerate(found):
            for column, hit in enumerate(hits[:k]):
                positions[row, column] = self._position.get(str(hit["id"]), -1)
                scores[row, column] = hit["distance"]
        return scores, positions

    def vector(self, position: int) -> np.ndarray:
        item = str(self.ids[position])
        held = self._held
        with held.errors():
            rows = held.query(id_filter([item]), [VECTOR], limit=1)
        if not rows:
            raise KeyError(f"Milvus collection {self.collection} has no id {item!r}")
        return np.asarray(rows[0][VECTOR], dtype=np.float32)

    def nbytes(self) -> int:
        return 4 * self.count * self.dim  # the float32 vectors, held by Milvus
