"""Items → this rank's share → prepared features, inside DataLoader workers.

Item at position ``p`` of a source belongs to rank ``p % world``; within a
rank its ``k``-th item (``k = p // world``) goes to loader worker
``k % num_workers``. Random-access sources read only their own positions;
streaming sources are iterated and the other positions skipped before any
decoding. A failing item becomes a ``Failed`` record instead of an exception,
so it reaches the errors table and the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.utils.data import IterableDataset, get_worker_info


class ItemSource(Protocol):
    """What the run machinery needs of a dataset (images or captions alike)."""

    name: str
    random_access: bool

    def length(self) -> int | None: ...
    def get(self, position: int) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...


@dataclass
class Prepared:
    position: int
    id: str
    features: Any


@dataclass
class Failed:
    position: int
    id: str
    reason: str


class RankShard(IterableDataset):
    """This rank's items of ``source``, prepared by ``prepare(item)`` in whichever worker owns them."""

    def __init__(
        self,
        source: ItemSource,
        prepare: Callable[[Any], Any],
        rank: int = 0,
        world: int = 1,
        skip_ids: Set[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.source, self.prepare, self.rank, self.world = source, prepare, rank, world
        self.skip_ids = skip_ids  # already embedded by an earlier run

    def __iter__(self) -> Iterator[Prepared | Failed]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        stride = self.world * workers
        offset = self.rank + self.world * worker
        for position, item in self._positions(offset, stride):
            if item.id in self.skip_ids:
                continue
            try:
                yield Prepared(position, item.id, self.prepare(item))
            except Exception as exc:
                yield Failed(position, item.id, f"{type(exc).__name__}: {exc}")

    def _positions(self, offset: int, stride: int) -> Iterator[tuple[int, Any]]:
        if self.source.random_access:
            total = self.source.length() or 0
            for position in range(offset, total, stride):
                yield position, self.source.get(position)
        else:
            for position, item in enumerate(self.source):
                if position % stride == offset:
                    yield position, item


@dataclass
class Batch:
    """A loader batch: prepared features of the good items, and the failures."""

    ids: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    features: Any = None
    failures: list[tuple[str, str]] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        self.features = _pin(self.features)
        return self


def _pin(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.pin_memory()
    if isinstance(value, dict):
        return {k: _pin(v) for k, v in value.items()}
    return value


class Collator:
    """Picklable collate_fn: splits failures off, collates the rest with the encoder's own collate."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, records: list[Prepared | Failed]) -> Batch:
        batch = Batch()
        good = []
        for record in records:
            if isinstance(record, Failed):
                batch.failures.append((record.id, record.reason))
            else:
                batch.ids.append(record.id)
                batch.positions.append(record.position)
                good.append(record.features)
        if good:
            batch.features = self.collate(good)
        return batch
