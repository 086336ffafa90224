"""Dataset base classes: sources of raw items with stable ids, knowing nothing of models."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa


@dataclass(frozen=True)
class ImageItem:
    """One image as a dataset holds it: decoding happens later, in a loader worker."""

    id: str
    source: Any  # bytes | path | {"bytes", "path"} dict | PIL image


@dataclass(frozen=True)
class Shard:
    """A deterministic slice of a source: positions ``start`` to ``stop`` (exclusive).

    For a random-access source the positions are item positions; for a
    multi-file streaming source a shard is one file and the positions are its
    rows (some of which the source may skip, e.g. duplicates).
    """

    index: int
    start: int
    stop: int
    label: str = ""

    def __len__(self) -> int:
        return self.stop - self.start


def position_shards(total: int, shard_size: int) -> list[Shard]:
    return [
        Shard(i, start, min(start + shard_size, total))
        for i, start in enumerate(range(0, total, shard_size))
    ]


def fingerprint_arrays(*arrays: Any) -> str:
    """A short hash of Arrow (or array-like) columns, without per-item Python for Arrow input."""
    digest = hashlib.sha256()
    for values in arrays:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        elif not isinstance(values, pa.Array):
            values = pa.array(values)
        batch = pa.record_batch([values], names=["v"])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        digest.update(sink.getvalue())
    return digest.hexdigest()[:16]


class EmptyDataset(ValueError):
    """A dataset that holds no items (an empty folder, a filter that keeps nothing)."""


class Source(ABC):
    """Items with stable, unique ids: the common shape of image and caption datasets.

    Life cycle: construct from config (cheap, no I/O) → ``build()`` (downloads,
    listing, de-duplication; called on the main process first, then on the
    other processes, which then read from the cache) → ``shards()`` and
    ``items(shard, ...)``.

    Sources with ``random_access = True`` implement ``get(position)``, and a
    shard is a range of positions; multi-file streaming sources override
    ``shards`` and ``items`` so that a shard reads only its own file.
    """

    #: The registry name; set by subclasses.
    kind: ClassVar[str] = ""
    random_access: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        self.name = name
        #: Every option this source was configured with (set by the registry).
        self.spec: dict[str, Any] = {}

    @abstractmethod
    def build(self) -> None:
        """Fetch and index the data. Must be idempotent and safe to call on every rank."""

    @abstractmethod
    def length(self) -> int | None:
        """Number of distinct items, or None when a stream does not know it."""

    def get(self, position: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no random access")

    def __iter__(self) -> Iterator[Any]:
        n = self.length()
        if n is None:
            raise NotImplementedError(f"{type(self).__name__} must implement __iter__")
        for position in range(n):
            yield self.get(position)

    def shards(self, shard_size: int) -> list[Shard]:
        """The same listing always gives the same shards (``build()`` first)."""
        total = self.length()
        if total is None:
            raise NotImplementedError(f"{type(self).__name__} must implement shards()")
        return position_shards(total, shard_size)

    def items(self, shard: Shard, start: int, stop: int) -> Iterator[tuple[int, Any]]:
        """(position, item) for the positions ``start`` to ``stop`` of ``shard`` that hold an item."""
        for position in range(start, stop):
            yield position, self.get(position)

    def listing(self) -> tuple[int, str]:
        """(number of items, fingerprint of their ids in order): the same job needs the same listing."""
        ids = self.item_ids()
        return len(ids), fingerprint_arrays(pa.array(ids, pa.string()))

    def item_ids(self) -> Any:
        """Every item id in position order (after ``build``): a list or an Arrow array."""
        return [item.id for item in self]

    def problems(self) -> list[tuple[str, str]]:
        """Input found unusable while building (where, why); reported with the item errors."""
        return []

    def describe(self) -> dict[str, Any]:
        """What to record in the output's metadata about this source."""
        return {"kind": self.kind}


class ImageDataset(Source):
    """A collection of images; ``get``/iteration yield ``ImageItem`` (id + undecoded source)."""

    def get(self, position: int) -> ImageItem:
        return super().get(position)
