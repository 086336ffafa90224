"""One (model, dataset) pass of this process: reader → model → writer, until no shard is left to claim.

The reader (``reader/loader.py``) claims shards, prepares their items in
loader workers and hands over batches in position order, each carrying its
shard's task; the model turns a batch's features into vectors; the writer
(``writer.py``) appends them to the part of their shard and commits the
shard when its last window is in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from img_search.embedding import Encoder
from img_search.faults import fail_point
from img_search.pipeline.plan import Job
from img_search.pipeline.reader.loader import Reader
from img_search.pipeline.reporting import RunStats
from img_search.pipeline.state.claims import PairClaims
from img_search.pipeline.writer import ShardWriter, part_writers

if TYPE_CHECKING:  # launch imports this module (through pairs)
    from img_search.pipeline.launch import Run

log = logging.getLogger(__name__)


def embed_pair(run: Run, encoder: Encoder, source: Any, layout: tuple[int, int]) -> RunStats:
    """One (model, dataset) pass of this process: claim a shard, embed it, commit it, until none is left."""
    job, accelerator, progress = run.job, run.accelerator, run.progress
    claims = PairClaims(run.ledger, encoder.name, source.name, source.shards(*layout), *run.slot)
    reader = Reader(job, encoder, source, claims, accelerator, run.loader_workers)
    settings, writers = job.settings, part_writers(job, encoder, source)
    writer = ShardWriter(claims, writers, settings.commit_every_s, source.problems())
    progress.start(encoder.name, source.name, source.length())
    stats = RunStats(encoder.name, source.name, rank=accelerator.process_index)
    clock = StageClock(stats)
    try:
        for batch in clock.each(reader, "wait"):
            with clock("forward"):
                vectors = forward(job, encoder, batch)
            with clock("write"):
                done = writer.add(batch, vectors, extra_columns(job, source, batch))
            progress.note(encoder.name, source.name, batch.task.shard.index, done)
            fail_point("step")
    finally:
        writer.close()
    stats.seconds = clock.elapsed()
    stats.rows, stats.errors = writer.stats.rows, writer.stats.errors
    stats.shards, stats.commits = writer.stats.shards, writer.stats.commits
    return stats


def forward(job: Job, encoder: Encoder, batch: Any) -> np.ndarray | None:
    from img_search.pipeline.gpu_decode import decode_on_device

    decode_on_device(batch, encoder, job.settings.max_image_pixels)  # tasks.decode=gpu's JPEGs
    if batch.features is None:
        return None
    return job.modality.forward(encoder, batch.features).float().cpu().numpy()


def extra_columns(job: Job, source: Any, batch: Any) -> dict[str, Any] | None:
    if job.modality.extra_columns is None or not batch.ids:
        return None
    return job.modality.extra_columns(source, batch.positions)


class StageClock:
    """Seconds per stage (waiting for data, forward, writing), so a slow stage shows in the summary."""

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        tick = time.perf_counter()
        yield
        self.stats.stages[stage] += time.perf_counter() - tick

    def each(self, iterable: Any, stage: str) -> Iterator[Any]:
        iterator = iter(iterable)
        while True:
            with self(stage):
                item = next(iterator, None)
            if item is None:
                return
            yield item
