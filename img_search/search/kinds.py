"""The index kinds: vector search over float32 unit vectors (inner product = cosine), exact and approximate.

Five kinds behind one small interface, so the query tool, the server, the
evaluation and the ANN benchmark treat them alike:

- ``flat``: FAISS ``IndexFlatIP``, exact; the reference for recall.
- ``faiss_hnsw``: FAISS HNSW graph (``M``, ``ef_construction``, ``ef_search``).
- ``faiss_ivf``: FAISS inverted lists (``nlist`` k-means cells, ``nprobe`` visited).
- ``usearch``: usearch's HNSW, a second library to compare against.
- ``milvus``: a Milvus collection (Milvus Lite file or server), the one kind that
  filters on metadata; its own package (``search/milvus/``), imported when first named.

Every kind is built from finite vectors only: ``store.selection.load_selection``
leaves out the rows whose vector is null or not finite (``store.vectors``), so
no kind meets a NaN (FAISS's k-means fails on one, usearch ranks it first).
Saving, reloading and choosing an index is ``search.indexes``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from img_search.registry import UnknownNameError

if TYPE_CHECKING:
    from img_search.store.selection import TableSelection


class FilterError(ValueError):
    """A ``filter=`` that cannot be used: malformed, naming an unknown field, or for a kind that cannot filter."""


class VectorIndex(ABC):
    """Inner-product search over float32 unit vectors; positions are row numbers of the build input."""

    kind: ClassVar[str]
    file_name: ClassVar[str]
    #: Parameters and their defaults, recorded with every index built.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Whether ``search`` takes a filter (``parse_filter``): only ``milvus``.
    filters: ClassVar[bool] = False

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
    """Exact: the vectors in a FAISS ``IndexFlatIP`` (its file format), searched by
    ``search.exact``'s block top-k, so that every exact answer ranks alike (ties by position)."""

    kind = "flat"

    def add(self, vectors: np.ndarray) -> None:
        import faiss

        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(_float32_rows(vectors))
        self.count = int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        from img_search.search.exact import matrix_top_k

        count = int(self.index.ntotal)
        vectors = faiss.rev_swig_ptr(self.index.get_xb(), count * self.dim)
        found = matrix_top_k(vectors.reshape(count, self.dim), _float32_rows(queries), k)
        missing = k - found.rows.shape[1]  # fewer than k vectors: padded as FAISS pads
        lowest = np.finfo(np.float32).min
        scores = np.pad(found.scores, ((0, 0), (0, missing)), constant_values=lowest)
        return scores, np.pad(found.rows, ((0, 0), (0, missing)), constant_values=-1)


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
        # a table under 39 rows gets one cell (exact): FAISS would warn that k-means lacks points
        self.index.cp.min_points_per_centroid = min(39, max(1, len(vectors) // nlist))
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
    "milvus": "img_search.search.milvus.index:MilvusIndex",
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
