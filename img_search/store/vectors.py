"""Embedding columns as matrices, and which rows can be searched: one policy for every reader and index.

A row is *left out* when its ``embedding`` is null (the writer never writes
one; another tool can) or holds NaN or infinity (an overflow in float16, a
damaged file):

- a null has no vector, and Arrow drops its place when it flattens the
  column: taken as it comes, every later vector would shift by one row (8
  rows of 1280 read back as a (8, 1120) matrix);
- a NaN vector scores NaN against every query, which each library ranks its
  own way (usearch ranks it first, FAISS's k-means fails on it); an infinite
  one scores ±inf or NaN.

``usable_rows`` is the policy, and the only place it is written: the one
reader of a selection (``store.selection``: ``load_selection``, hence
``open_table(...).vectors``, every index kind, evaluation and the server, and
``store.read_embeddings``) and exact search (block by block, ``store.blocks``)
take their vectors through it. Left-out rows are counted and named in one warning per
read (``LeftOut.warn``); an index records them (``left_out.parquet`` in its
folder). A selection of nothing else is refused (``NoUsableRows``). A vector
of another length than the others is an error, never left out.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

NULL = "its vector is null"
NOT_FINITE = "its vector is not finite"
#: Ids named in a warning or an error; the rest are counted.
NAMED = 10


class NoUsableRows(ValueError):
    """Every row of a selection is left out: nothing can be searched."""


@dataclass
class LeftOut:
    """Rows a reader left out: their ids, in table order, by reason."""

    ids: dict[str, list[str]] = field(default_factory=lambda: {NULL: [], NOT_FINITE: []})

    @classmethod
    def of(cls, reasons: dict[str, str]) -> LeftOut:
        """From ``reasons()`` (id → reason), as an index records them."""
        left_out = cls()
        for item, reason in reasons.items():
            left_out.ids.setdefault(reason, []).append(item)
        return left_out

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.ids.values())

    def extend(self, other: LeftOut) -> None:
        for reason, ids in other.ids.items():
            self.ids.setdefault(reason, []).extend(ids)

    def reasons(self) -> dict[str, str]:
        """The reason of each left-out id."""
        return {item: reason for reason, ids in self.ids.items() for item in ids}

    def counts(self) -> dict[str, int]:
        return {"null": len(self.ids[NULL]), "not_finite": len(self.ids[NOT_FINITE])}

    def describe(self) -> str:
        """``2 null, 1 not finite: 'a.jpg', 'b.jpg', 'c.jpg'`` (the first ids)."""
        counts = ", ".join(
            f"{n} {what.replace('_', ' ')}" for what, n in self.counts().items() if n
        )
        named = [item for ids in self.ids.values() for item in ids][:NAMED]
        more = " …" if len(self) > len(named) else ""
        return f"{counts}: {', '.join(map(repr, named))}{more}"

    def warn(self, source: str) -> None:
        """One warning naming the left-out rows of ``source`` (nothing when there are none)."""
        if len(self):
            log.warning(
                "%s: %d rows with null or non-finite vectors are left out (%s)",
                source,
                len(self),
                self.describe(),
            )

    def refuse_if_all(self, source: str, rows: int) -> None:
        """``NoUsableRows`` when every one of the ``rows`` read is left out."""
        if rows and len(self) == rows:
            raise NoUsableRows(
                f"{source}: none of its {rows} vectors can be searched ({self.describe()}); "
                "embed them again"
            )


@dataclass
class Usable:
    """The rows of a column that can be searched: ``vectors[i]`` is the row of the i-th True in ``keep``."""

    keep: np.ndarray  # (rows,) bool
    vectors: np.ndarray  # (kept rows, dim) in the stored dtype; may be a read-only view of Arrow's
    left_out: LeftOut

    @property
    def complete(self) -> bool:
        return not len(self.left_out)


def usable_rows(
    column: pa.ChunkedArray | pa.Array,
    ids: pa.ChunkedArray | pa.Array | np.ndarray | None,
    *,
    float32: bool = False,
) -> Usable:
    """The policy: rows with a null or non-finite vector left out, the others as one matrix.

    ``ids`` (the same rows' ids) name the left-out rows; without them a left-out
    row is named by its position. ``float32``: the matrix converted
    (``as_float32``) before the check, which is faster on float32 and keeps
    every NaN and infinity.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    width = column.type.list_size if pa.types.is_fixed_size_list(column.type) else 0
    keeps, parts = [], []
    valid_rows = []
    for chunk in chunks:
        valid = _valid(chunk)
        present = chunk if valid.all() else chunk.filter(pa.array(valid))
        vectors = chunk_vectors(present) if len(present) else np.zeros((0, width), np.float32)
        if float32:
            vectors = as_float32(vectors)
        finite = finite_rows(vectors)
        keep = valid.copy()
        keep[valid] = finite
        keeps.append(keep)
        valid_rows.append(valid)
        if len(vectors):
            parts.append(vectors if finite.all() else vectors[finite])
    keep = np.concatenate(keeps) if keeps else np.zeros(0, bool)
    valid = np.concatenate(valid_rows) if valid_rows else np.zeros(0, bool)
    left_out = LeftOut()
    if not keep.all():
        left_out.ids[NULL] = _named(ids, np.flatnonzero(~valid))
        left_out.ids[NOT_FINITE] = _named(ids, np.flatnonzero(valid & ~keep))
    return Usable(keep=keep, vectors=_stacked(parts, width), left_out=left_out)


def finite_rows(vectors: np.ndarray) -> np.ndarray:
    """Which rows hold only finite values.

    float32: the element-wise test, which numpy vectorises (3× the sum below).
    Other dtypes: a row's sum in float64 is finite exactly then (finite float16
    values cannot overflow it; NaN and ±inf carry through), faster there than
    the element-wise test.
    """
    if vectors.dtype == np.float32:
        return np.isfinite(vectors).all(axis=1)
    return np.isfinite(vectors.sum(axis=1, dtype=np.float64))


def as_float32(vectors: np.ndarray) -> np.ndarray:
    """A matrix as C-contiguous float32: itself when it is one, else a converted copy.

    torch converts float16 faster than numpy's cast loop (0.31 against 0.63 s
    for 500,000 x 768 into new arrays here; 2.36 against 0.86 GB/s measured
    before); ``from_dlpack`` takes Arrow's read-only buffers without a copy or
    a warning. Importing torch for it costs more (2 s) than it saves below
    millions of rows, so torch converts when the process has it already
    (evaluation, the query encoders, the server), numpy otherwise.
    """
    if vectors.dtype == np.float32 and vectors.flags.c_contiguous:
        return vectors
    if not vectors.size:
        return np.zeros(vectors.shape, dtype=np.float32)
    torch = sys.modules.get("torch")
    if torch is None:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    converted = np.empty(vectors.shape, dtype=np.float32)
    torch.from_dlpack(converted).copy_(torch.from_dlpack(np.ascontiguousarray(vectors)))
    return converted


def _valid(chunk: pa.Array) -> np.ndarray:
    if chunk.null_count == 0:
        return np.ones(len(chunk), bool)
    return chunk.is_valid().to_numpy(zero_copy_only=False)


def _named(ids: pa.ChunkedArray | pa.Array | np.ndarray | None, rows: np.ndarray) -> list[str]:
    if ids is None:
        return [f"row {row}" for row in rows]
    if isinstance(ids, np.ndarray):
        return [str(item) for item in ids[rows]]
    return [str(item) for item in ids.take(pa.array(rows, pa.int64())).to_pylist()]


def _stacked(parts: list[np.ndarray], width: int) -> np.ndarray:
    if not parts:
        return np.zeros((0, width), dtype=np.float32)
    if len({part.shape[1] for part in parts}) > 1:
        raise ValueError("vectors of different dimensions in one selection: filter by model_name")
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def embedding_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A (fixed-size) list column of equal-length vectors → one float32 matrix, row for row.

    Raw: NaN rows stay in; a null row is an error (there is no row to put in
    its place). Readers that may meet either go through ``usable_rows``.
    """
    if column.null_count:
        raise ValueError(
            f"{column.null_count} null vectors among {len(column)} rows: "
            "read them with store.vectors.usable_rows, which leaves them out"
        )
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    width = column.type.list_size if pa.types.is_fixed_size_list(column.type) else 0
    vectors = _stacked([chunk_vectors(chunk) for chunk in chunks if len(chunk)], width)
    return vectors.astype(np.float32, copy=False)


def chunk_vectors(chunk: pa.Array) -> np.ndarray:
    """One non-empty chunk of a (fixed-size) list column without nulls → (rows, dim) in the
    stored dtype, a view where Arrow allows."""
    if chunk.null_count:
        raise ValueError(f"{chunk.null_count} null vectors: leave them out with usable_rows")
    if not pa.types.is_fixed_size_list(chunk.type):
        lengths = pc.list_value_length(chunk)
        low, high = pc.min(lengths).as_py(), pc.max(lengths).as_py()
        if low != high:
            raise ValueError(
                f"vectors of different dimensions ({low} to {high}) in one selection: "
                "filter by model_name"
            )
    values = chunk.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(chunk), -1)
