"""Dataset base classes: sources of raw items with stable ids, knowing nothing of models."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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
    #: One of the shrinking shards at the end of a listing (``position_shards``): claimed last.
    tail: bool = False

    def __len__(self) -> int:
        return self.stop - self.start


#: Shards of each size in the shrinking end of a listing: one machine's accelerators.
TAIL_WIDTH = 8


def position_shards(total: int, shard_size: int, unit: int = 0) -> list[Shard]:
    """``shard_size`` positions a shard, then (with ``unit``) an end that shrinks to ``unit``.

    Processes claim shards as they go, so they all run out of work within
    one shard of each other: with 64 shards on 8 GPUs that is up to an
    eighth of the job spent waiting for the last ones. So the end of the
    listing is cut into ``TAIL_WIDTH`` shards of each size ``unit × 2^j``
    below ``shard_size`` (largest first; ``unit`` is the batch size, so
    every one is whole batches), claimed after every full-size shard: the
    processes' last shards are one batch long and they finish together.
    The tail is at most half the listing; without ``unit`` there is none.
    Only the listing, ``shard_size`` and ``unit`` decide the shards, never
    the number of processes.
    """
    sizes = tail_sizes(total, shard_size, unit)
    body = total - sum(sizes)
    bounds = [(start, min(start + shard_size, body)) for start in range(0, body, shard_size)]
    shards = [Shard(i, a, b) for i, (a, b) in enumerate(bounds)]
    start = body
    for size in sizes:
        shards.append(Shard(len(shards), start, start + size, tail=True))
        start += size
    return shards


def tail_sizes(total: int, shard_size: int, unit: int) -> list[int]:
    """The sizes of the shrinking end of a listing, in listing order (largest first), or none."""
    if unit <= 0 or unit * 2 > shard_size:
        return []
    levels = []
    size = unit
    while size < shard_size:
        levels.append(size)
        size *= 2
    sizes = [size for size in reversed(levels) for _ in range(TAIL_WIDTH)]
    return sizes if 2 * sum(sizes) <= total else []


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


@dataclass(frozen=True)
class BuildContext:
    """What ``build()`` may share with the other processes of its job.

    A source whose listing is long to make (``builds_together``) splits it:
    every process builds at once, starts on its own stretch (``slot`` of
    ``slots``, as ``claim_order`` does for shards), and keeps each finished
    piece in ``folder``, which every process of the job (other ranks, array
    tasks, Ray workers, a rerun) sees and reads instead of making it again.
    """

    #: A folder of the job every process sees (under the output's ``.partial/``); None: keep nothing.
    folder: Path | None = None
    slot: int = 0
    slots: int = 1
    #: Processes this one may start for its share of the work (its share of the machine's cores).
    workers: int = 1


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
    #: ``build()`` shares its work through ``context`` and is called on every process at once;
    #: otherwise the main process builds first (it downloads and fills caches), then the others.
    builds_together: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name
        #: Every option this source was configured with (set by the registry).
        self.spec: dict[str, Any] = {}
        #: Set by the run machinery before ``build()``; a source used alone keeps nothing.
        self.context = BuildContext()

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

    def shards(self, shard_size: int, unit: int = 0) -> list[Shard]:
        """The same listing always gives the same shards (``build()`` first); see ``position_shards``."""
        total = self.length()
        if total is None:
            raise NotImplementedError(f"{type(self).__name__} must implement shards()")
        return position_shards(total, shard_size, unit)

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

    def image_bytes(self, position: int) -> int | None:
        """The stored size of the item's image when known without reading it (a tar member's
        header says it), so that a reader with a limit refuses it before reading; else None."""
        return None
