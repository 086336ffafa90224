"""The reader of one (model, dataset) pass: claimed shards in, batches that name their shard out.

The ``Reader`` owns what stands between the claims and the model: the
feeder that claims shards on demand (``feeder.py``), the loader workers
that read and prepare the items (``stream.py``: the decode and the encoder's
transform), the thread that receives their batches (``receiver.py``), and
what happens when one of those workers dies. Each batch leaves it carrying
its ``ShardTask`` and the number of windows of that shard, so the writer
needs nothing else.

A loader worker can die without an exception: the kernel's OOM killer, a
crash inside a C decoder. PyTorch then ends the whole iteration with
``DataLoader worker ... exited unexpectedly``, without saying which item
was at fault, and every rerun would die on the same item. Here the windows
that were in flight are prepared again one at a time, each in a fresh
one-worker loader: a window that succeeds goes on as usual, a window whose
worker dies again is reported with the ids of its items and the reason, and
the loader restarts after them. The run goes on.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
from collections.abc import Iterator
from typing import Any

from accelerate import Accelerator
from torch.utils.data import DataLoader

from img_search.embedding import Encoder
from img_search.pipeline.plan import Job
from img_search.pipeline.reader.feeder import Feeder
from img_search.pipeline.reader.receiver import (
    Receiver,
    WorkerDied,
    deaths_only_in_next,
    exit_codes,
)
from img_search.pipeline.reader.stream import Batch, Collator, ShardStream, start_loader_worker
from img_search.pipeline.state.claims import PairClaims

log = logging.getLogger("img_search")
#: How long a batch lost in transit waits for its worker's death to show before it is an error.
TRANSIT_DEATH_WAIT_S = 5.0


class Reader:
    """Batches of the shards ``claims`` hands this process, prepared by loader workers, surviving
    their deaths, in position order, each carrying its ``task`` and ``windows_in_shard``."""

    def __init__(
        self,
        job: Job,
        encoder: Encoder,
        source: Any,
        claims: PairClaims,
        accelerator: Accelerator,
        workers: int,
    ) -> None:
        """``workers``: loader worker processes (``launch.Run.loader_workers``: a Ray actor's come
        from its CPUs, a local rank's from its share of the machine)."""
        settings, modality = job.settings, job.modality
        self.device = accelerator.device.type
        self.source = source
        self.feeder = Feeder(claims.claim_next, settings.batch_size)
        self.workers = workers
        self.prefetch = settings.prefetch_factor
        self.prepare = modality.make_prepare(encoder, settings)
        self.collate = Collator(modality.make_collate(encoder))

    def __iter__(self) -> Iterator[Batch]:
        tasks, windows = self.feeder.tasks, self.feeder.windows  # the main process's claims
        for batch in self._delivered():
            batch.task, batch.windows_in_shard = tasks[batch.claim], len(windows[batch.claim])
            yield batch

    def _delivered(self) -> Iterator[Batch]:
        """Every window's batch, once, in order; those a dying worker held are prepared again."""
        start, deaths_here = 0, 0
        while True:
            received = start
            try:
                for batch in self._batches(start, None, self.workers):
                    received += 1
                    deaths_here = 0
                    yield batch
                return
            except WorkerDied as died:
                deaths_here = deaths_here + 1 if received == start else 1
                if deaths_here > 2:  # nothing in flight to blame: not an item's fault
                    raise RuntimeError(str(died)) from died
                claimed = sum(len(w) for w in self.feeder.windows)
                in_flight = range(received, min(received + self.workers * self.prefetch, claimed))
                log.warning(
                    "%s; preparing the %d batch(es) it may have held one at a time",
                    died,
                    len(in_flight),
                )
                alone = [self._alone(window) for window in in_flight]
                if len(alone) > 1 and all(isinstance(a, WorkerDied) for a in alone):
                    raise RuntimeError(
                        f"{died}, and so did every batch it may have held, each alone: not an "
                        "item's fault (memory taken elsewhere? /dev/shm full?); rerun to resume"
                    ) from died
                for window, outcome in zip(in_flight, alone, strict=True):
                    yield (
                        self._reported(window, outcome)
                        if isinstance(outcome, WorkerDied)
                        else outcome
                    )
                start = max(received, in_flight.stop)

    def _alone(self, window: int) -> Batch | WorkerDied:
        """One window in a fresh one-worker loader; the death of that worker too, if it dies."""
        try:
            return next(iter(self._batches(window, {window}, 1)))
        except WorkerDied as died:
            return died

    def _reported(self, window: int, died: WorkerDied) -> Batch:
        """The window's items as errors, naming how its worker died."""
        k, (first, stop) = self._locate(window)
        items = self.source.items(self.feeder.tasks[k].shard, first, stop)
        reason = f"{died.reason} while preparing the batch of this item"
        log.warning("items %d to %d of %s: %s", first, stop - 1, self.source.name, reason)
        failures = [(item.id, reason) for _, item in items]
        return Batch(claim=k, window=(first, stop), failures=failures)

    def _locate(self, window: int) -> tuple[int, tuple[int, int]]:
        for k, windows in enumerate(self.feeder.windows):
            if window < len(windows):
                return k, windows[window]
            window -= len(windows)
        raise IndexError(window)

    def _batches(self, start: int, only: set[int] | None, workers: int) -> Iterator[Batch]:
        stream = ShardStream(self.source, self.feeder, self.prepare, self.collate, start, only)
        if self.workers == 0:
            yield from stream
            return
        context = multiprocessing.get_context()
        self.feeder.serve(workers, context)
        loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            pin_memory=self.device == "cuda",
            prefetch_factor=self.prefetch,
            worker_init_fn=functools.partial(start_loader_worker, idle=self.device == "cpu"),
            multiprocessing_context=context,
        )
        receiver: Receiver | None = None
        try:
            iterator = iter(loader)  # forks the workers: on this thread, never on the receiver's
            deaths_only_in_next()
            receiver = Receiver(iterator, depth=self.prefetch)
            while True:
                try:
                    batch = receiver.next()
                except StopIteration:
                    return
                except RuntimeError as exc:
                    codes = exit_codes(iterator)
                    # a worker's own exception arrives as "Caught X in DataLoader worker ...": a bug
                    if "exited unexpectedly" not in str(exc) and not codes:
                        raise
                    raise WorkerDied(str(exc), codes) from exc
                except (ConnectionError, EOFError) as exc:
                    # a batch whose worker was killed while it was in transit: its tensors'
                    # memory went with the worker (torch passes it by file descriptor)
                    codes = exit_codes(iterator, wait_s=TRANSIT_DEATH_WAIT_S)
                    if not codes:
                        raise
                    raise WorkerDied(
                        f"a DataLoader worker died with a batch in transit ({type(exc).__name__})",
                        codes,
                    ) from exc
                yield batch
        finally:
            if receiver is not None:
                receiver.stop()
            self.feeder.stop()
