"""Items → this rank's share → prepared features, inside DataLoader workers.

Item at position ``p`` of a source belongs to rank ``p % world``; within a
rank its ``k``-th item (``k = p // world``) lands in batch
``b = k // batch_size``, and batch ``b`` is made by loader worker
``b % num_workers``. Batches are therefore the same whatever the number of
workers, so the vectors are bit-identical too (a forward pass over a
different batch composition differs in the last float bits). Workers
collate their own batches, so the main process only runs the model.
Random-access sources read only their own positions;
streaming sources are iterated and the other positions skipped before any
decoding. A failing item becomes a ``Failed`` record instead of an exception,
so it reaches the errors table and the run goes on.
"""

from __future__ import annotations

import contextlib
import os
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
    """This rank's items of ``source`` as collated ``Batch``es, made by whichever worker owns them.

    Use with ``DataLoader(shard, batch_size=None)``: batching happens here.
    """

    def __init__(
        self,
        source: ItemSource,
        prepare: Callable[[Any], Any],
        collate: Callable[[list[Prepared | Failed]], Batch],
        batch_size: int,
        rank: int = 0,
        world: int = 1,
        skip_ids: Set[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.source, self.prepare, self.collate = source, prepare, collate
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.skip_ids = skip_ids  # already embedded by an earlier run

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        for members in self._batches(workers, worker):
            records = [self._prepare(position, item) for position, item in members]
            records = [r for r in records if r is not None]
            if records:
                yield self.collate(records)

    def _prepare(self, position: int, item: Any) -> Prepared | Failed | None:
        if item.id in self.skip_ids:
            return None
        try:
            return Prepared(position, item.id, self.prepare(item))
        except Exception as exc:
            return Failed(position, item.id, f"{type(exc).__name__}: {exc}")

    def _batches(self, workers: int, worker: int) -> Iterator[list[tuple[int, Any]]]:
        """(position, item) lists of this worker's batches; items of other workers are never decoded."""
        size, rank, world = self.batch_size, self.rank, self.world
        if self.source.random_access:
            total = self.source.length() or 0
            rank_items = max(0, (total - rank + world - 1) // world)
            for b in range(worker, (rank_items + size - 1) // size, workers):
                ks = range(b * size, min((b + 1) * size, rank_items))
                yield [(rank + world * k, self.source.get(rank + world * k)) for k in ks]
            return
        members: list[tuple[int, Any]] = []
        current = -1
        for position, item in enumerate(self.source):
            if position % world != rank:
                continue
            b = (position // world) // size
            if b % workers != worker:
                continue
            if b != current and members:
                yield members
                members = []
            current = b
            members.append((position, item))
        if members:
            yield members


def yield_to_the_model(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` for CPU runs: loader workers only take idle CPU time.

    On a CPU the model's threads and the decoders share the cores; a decoder
    preempting one of the model's threads stalls all of them at the next
    barrier, which costs twice the decoding time. Under ``SCHED_IDLE`` the
    workers run in the gaps between the model's parallel regions, and when
    they fall behind the main process blocks on the queue, which gives them
    the cores back.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not permitted: be nice instead
        with contextlib.suppress(OSError):
            os.nice(19)


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
