"""Vector indexes over unit vectors (inner product = cosine): exact and approximate.

Five kinds behind one small interface, so the query tool, the server, the
evaluation and the ANN benchmark treat them alike:

- ``flat``: FAISS ``IndexFlatIP``, exact; the reference for recall.
- ``faiss_hnsw``: FAISS HNSW graph (``M``, ``ef_construction``, ``ef_search``).
- ``faiss_ivf``: FAISS inverted lists (``nlist`` k-means cells, ``nprobe`` visited).
- ``usearch``: usearch's HNSW, a second library to compare against.
- ``milvus``: a Milvus collection (Milvus Lite file or server), the one kind that
  filters on metadata; its own module (``milvus``), imported when first named.

An index is saved as a folder next to its table (``<table>.<model>.<dataset>.<name>.index``)
holding the library's own file, the ids in index order and ``index.json``
with the model identity and the table it came from, so it reloads without
rebuilding and refuses to answer for a table that has changed since.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from img_search.registry import UnknownNameError
from img_search.search.tables import TableSelection, choose_selection, load_selection
from img_search.store import TableLayout
from img_search.store.atomic import atomic_write

FORMAT = "img_search.index/1"
log = logging.getLogger(__name__)


class FilterError(ValueError):
    """A ``filter=`` that cannot be used: malformed, naming an unknown field, or for a kind that cannot filter."""


class VectorIndex(ABC):
    """Inner-product search over float32 unit vectors; positions are row numbers of the build input."""

    kind: ClassVar[str]
    file_name: ClassVar[str]
    #: Parameters and their defaults, recorded with every index built.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, dim: int, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"index kind {self.kind} has no parameter(s) {unknown}; "
                f"it takes {sorted(self.defaults) or 'none'}"
            )
        self.dim = dim
        self.params = {**self.defaults, **{k: v for k, v in params.items() if v is not None}}
        self.count = 0

    @abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Build from all vectors at once (training included where the kind needs it)."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (len(queries), k); position −1 where fewer than k exist.

        A kind that filters (``parse_filter``) also takes ``where=`` (what that returned).
        """

    @abstractmethod
    def save(self, path: Path) -> None: ...

    @abstractmethod
    def load(self, path: Path) -> None: ...

    @abstractmethod
    def nbytes(self) -> int:
        """Memory the index holds (vectors and graph or lists)."""

    @abstractmethod
    def vector(self, position: int) -> np.ndarray:
        """The stored vector at ``position`` (for "more like this" without the table)."""

    def add_selection(self, selection: TableSelection, name: str) -> None:
        """Build index ``name`` from a table selection (a kind that stores ids and fields reads them)."""
        self.add(selection.vectors)

    def attach(self, ids: np.ndarray) -> None:
        """The ids of the build input in position order (for a kind that answers with ids)."""
        return None

    def parse_filter(self, text: str | None) -> Any:
        """``text`` checked for ``search(where=...)``; None when blank. Only ``milvus`` filters."""
        if text is None or not str(text).strip():
            return None
        raise FilterError(
            f"a {self.kind} index cannot filter: build a milvus index (indexes=[milvus]) and "
            "search that (<table>.<model>.<dataset>.milvus.index) with filter=..."
        )

    def close(self) -> None:
        """Release connections (a kind backed by a database server)."""
        return None

    def __len__(self) -> int:
        return self.count


def _float32_rows(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)


class _FaissIndex(VectorIndex):
    file_name = "index.faiss"

    def __init__(self, dim: int, **params: Any) -> None:
        super().__init__(dim, **params)
        self.index: Any = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._tune()
        scores, positions = self.index.search(_float32_rows(queries), k)
        return scores, positions

    def _tune(self) -> None:
        """Apply search-time parameters (they are not part of the saved file)."""

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path / self.file_name))

    def load(self, path: Path) -> None:
        import faiss

        self.index = faiss.read_index(str(path / self.file_name))
        self.count = int(self.index.ntotal)

    def nbytes(self) -> int:
        return 4 * int(self.index.ntotal) * self.dim  # the float32 vectors

    def vector(self, position: int) -> np.ndarray:
        return self.index.reconstruct(int(position))


class FlatIndex(_FaissIndex):
    kind = "flat"

    def add(self, vectors: np.ndarray) -> None:
        import faiss

        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(_float32_rows(vectors))
        self.count = int(self.index.ntotal)


class FaissHNSWIndex(_FaissIndex):
    kind = "faiss_hnsw"
    defaults: ClassVar[dict[str, Any]] = {"M": 32, "ef_construction": 80, "ef_search": 128}

    def add(self, vectors: np.ndarray) -> None:
        import faiss

        self.index = faiss.IndexHNSWFlat(
            self.dim, int(self.params["M"]), faiss.METRIC_INNER_PRODUCT
        )
        self.index.hnsw.efConstruction = int(self.params["ef_construction"])
        self.index.add(_float32_rows(vectors))
        self.count = int(self.index.ntotal)

    def _tune(self) -> None:
        self.index.hnsw.efSearch = int(self.params["ef_search"])

    def nbytes(self) -> int:
        graph = self.index.hnsw
        links = 4 * (graph.neighbors.size() + graph.levels.size()) + 8 * graph.offsets.size()
        return super().nbytes() + int(links)


class FaissIVFIndex(_FaissIndex):
    kind = "faiss_ivf"
    defaults: ClassVar[dict[str, Any]] = {"nlist": None, "nprobe": 16}

    def add(self, vectors: np.ndarray) -> None:
        import faiss

        vectors = _float32_rows(vectors)
        nlist = self.nlist_for(len(vectors))
        quantizer = faiss.IndexFlatIP(self.dim)
        self.index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors
        if len(vectors) > 256 * nlist:  # k-means needs ~40-256 points per cell, not all of them
            sample = vectors[rng.choice(len(vectors), 256 * nlist, replace=False)]
        self.index.train(sample)
        self.index.add(vectors)
        self.index.make_direct_map()  # "more like this" reads vectors back by position
        self.count = int(self.index.ntotal)
        self.params["nlist"] = nlist

    def load(self, path: Path) -> None:
        super().load(path)
        if not self.index.direct_map.type:
            self.index.make_direct_map()

    def nlist_for(self, n: int) -> int:
        """``nlist`` from the config, or auto: about 4·√n cells, at least 39 training points each."""
        wanted = self.params.get("nlist")
        nlist = int(wanted) if wanted else int(4 * np.sqrt(n))
        return max(1, min(nlist, n // 39 or 1))

    def _tune(self) -> None:
        self.index.nprobe = min(int(self.params["nprobe"]), self.index.nlist)

    def nbytes(self) -> int:
        ids = 8 * int(self.index.ntotal)  # list entries and the position → list map
        return super().nbytes() + 2 * ids + 4 * int(self.index.nlist) * self.dim


class USearchIndex(VectorIndex):
    kind = "usearch"
    file_name = "index.usearch"
    defaults: ClassVar[dict[str, Any]] = {
        "connectivity": 32,
        "expansion_add": 128,
        "expansion_search": 128,
    }

    def __init__(self, dim: int, **params: Any) -> None:
        super().__init__(dim, **params)
        self.index: Any = None

    def _new(self) -> Any:
        from usearch.index import Index

        return Index(
            ndim=self.dim,
            metric="ip",
            dtype="f32",
            connectivity=int(self.params["connectivity"]),
            expansion_add=int(self.params["expansion_add"]),
            expansion_search=int(self.params["expansion_search"]),
        )

    def add(self, vectors: np.ndarray) -> None:
        self.index = self._new()
        vectors = _float32_rows(vectors)
        self.index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=0)
        self.count = len(self.index)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.index.expansion_search = int(self.params["expansion_search"])
        found = self.index.search(_float32_rows(queries), k, threads=0)
        keys = np.atleast_2d(np.asarray(found.keys)).astype(np.int64)
        distances = np.atleast_2d(np.asarray(found.distances, dtype=np.float32))
        # one query comes back as ``Matches`` (no counts, maybe fewer than k), several as ``BatchMatches``
        counts = np.atleast_1d(np.asarray(getattr(found, "counts", keys.shape[1])))
        if keys.shape[1] < k:
            keys = np.pad(keys, ((0, 0), (0, k - keys.shape[1])), constant_values=-1)
            distances = np.pad(
                distances, ((0, 0), (0, k - distances.shape[1])), constant_values=np.inf
            )
        missing = np.arange(keys.shape[1])[None, :] >= counts[:, None]
        keys[missing] = -1
        scores = 1.0 - distances  # usearch's "ip" distance is 1 - inner product
        scores[missing] = -np.inf
        return scores, keys

    def save(self, path: Path) -> None:
        self.index.save(str(path / self.file_name))

    def load(self, path: Path) -> None:
        self.index = self._new()
        self.index.load(str(path / self.file_name))
        self.count = len(self.index)

    def nbytes(self) -> int:
        return int(self.index.memory_usage)

    def vector(self, position: int) -> np.ndarray:
        return np.asarray(self.index.get(int(position)), dtype=np.float32)


#: Kinds by name: a class, or "module:class" for one imported when first named (``milvus``
#: subclasses ``VectorIndex``, so its module cannot be imported from this one's top).
INDEX_KINDS: dict[str, type[VectorIndex] | str] = {
    **{cls.kind: cls for cls in (FlatIndex, FaissHNSWIndex, FaissIVFIndex, USearchIndex)},
    "milvus": "img_search.search.milvus:MilvusIndex",
}


def make_index(kind: str, dim: int, **params: Any) -> VectorIndex:
    if kind not in INDEX_KINDS:
        raise UnknownNameError(
            f"unknown index kind {kind!r}; registered: {', '.join(sorted(INDEX_KINDS))}"
        )
    cls = INDEX_KINDS[kind]
    if isinstance(cls, str):
        module, _, name = cls.partition(":")
        cls = INDEX_KINDS[kind] = getattr(importlib.import_module(module), name)
    return cls(dim, **params)


# -- saved indexes ------------------------------------------------------------


def index_dir(table: Path, model_name: str, dataset_name: str, name: str) -> Path:
    """Where the index ``name`` of one (model, dataset) of ``table`` lives: next to the table."""
    stem = table.name.removesuffix(".parquet")
    return table.with_name(f"{stem}.{model_name}.{dataset_name}.{name}.index")


def table_stamp(path: Path) -> dict[str, Any]:
    """What identifies one version of a table: a rewritten table (or folder metadata) gets a new stamp."""
    stat = TableLayout.of(path).metadata_file.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class SavedIndex:
    """An index with the ids it returns and the identity of the model that made its vectors."""

    def __init__(self, path: Path, index: VectorIndex, meta: dict[str, Any], ids: np.ndarray):
        self.path, self.index, self.meta, self.ids = path, index, meta, ids
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

    def search(
        self, queries: np.ndarray, k: int, where: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self.ids))
        if where is None:
            return self.index.search(queries, k)
        return self.index.search(queries, k, where=where)

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
        """
        scores, positions = self.search(vector[None, :], k + (exclude is not None), where)
        hits = []
        for score, position in zip(scores[0], positions[0], strict=True):
            if position < 0 or str(self.ids[position]) == exclude:
                continue
            hits.append((int(position), str(self.ids[position]), float(score)))
        return hits[:k]


def build_index(
    selection: TableSelection, name: str, kind: str, params: dict[str, Any], save: bool = True
) -> SavedIndex:
    """Build an index of one table selection (and save it next to the table)."""
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
    }
    path = index_dir(selection.path, selection.model_name, selection.dataset_name, name)
    saved = SavedIndex(path, index, meta, selection.ids)
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
    elif recorded.exists():
        current = recorded
    else:
        current = path.parent / recorded.name
    if current.exists():
        if table_stamp(current) != meta.get("table_stamp"):
            raise StaleIndex(
                f"{current} changed after the index {path} was built: rebuild it "
                f"(python -m img_search.search.build table={current})"
            )
        meta["table"] = str(current.resolve())
    index = make_index(meta["kind"], int(meta["dim"]), **meta.get("params", {}))
    index.load(path)
    ids = pq.read_table(path / "ids.parquet").column("id").to_numpy(zero_copy_only=False)
    return SavedIndex(path, index, meta, ids)


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
    saved = index_dir(path, model_name, dataset_name, name)
    if (saved / "index.json").exists():
        try:
            return load_index(saved, table=path)
        except StaleIndex:  # rebuild it as it was built (its kind and parameters)
            meta = json.loads((saved / "index.json").read_text())
            kind, params = meta["kind"], dict(meta.get("params") or {})
            if kind == "faiss_ivf":
                params["nlist"] = None  # chosen again for the new row count
    selection = load_selection(path, model_name, dataset_name)
    return build_index(selection, name, kind, params or {})


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
