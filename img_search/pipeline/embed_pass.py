"""One (model, dataset) pass of this process: reader → model → writer, until no shard is left to claim.

The reader (``reader/``) claims shards, prepares their items in loader
workers and hands over batches in position order; the model turns a batch's
features into vectors; the writer (``writer.py``) appends them to the part of
their shard and commits the shard when its last window is in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from accelerate import Accelerator

from img_search.embedding import Encoder
from img_search.faults import fail_point
from img_search.pipeline.engines.slurm import start_slot
from img_search.pipeline.job_progress import JobProgress
from img_search.pipeline.plan import Job
from img_search.pipeline.reader.feeder import Feeder
from img_search.pipeline.reader.loader import PassLoader
from img_search.pipeline.reporting import (
    RunStats,
)
from img_search.pipeline.state.claims import PairClaims
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.writer import ShardCommitter, part_writers

log = logging.getLogger(__name__)


def embed_pair(
    accelerator: Accelerator,
    encoder: Encoder,
    source: Any,
    job: Job,
    ledger: Ledger,
    layout: tuple[int, int],
    progress: JobProgress,
) -> RunStats:
    """One (model, dataset) pass of this process: claim a shard, embed it, commit it, until none is left."""
    stats = RunStats(encoder.name, source.name, rank=accelerator.process_index)
    shards = source.shards(*layout)
    slot, slots = start_slot(accelerator.process_index, accelerator.num_processes)
    claims = PairClaims(ledger, encoder.name, source.name, shards, slot, slots)
    feeder = Feeder(claims.claim_next, job.settings.batch_size)
    loader = PassLoader(job, encoder, source, feeder, accelerator)
    committer = ShardCommitter(
        claims, part_writers(job, encoder, source), job.settings.commit_every_s, source.problems()
    )
    progress.start(encoder.name, source.name, source.length())
    clock = StageClock(stats)
    try:
        for batch in clock.each(loader, "wait"):
            with clock("forward"):
                vectors = forward(job, encoder, batch)
            with clock("write"):
                k = batch.task
                extra = extra_columns(job, source, batch)
                committer.add(k, feeder.tasks[k], len(feeder.windows[k]), batch, vectors, extra)
            shard, opened = feeder.tasks[k].shard, committer.open.get(k)
            done = opened.record.positions_done if opened else shard.stop - shard.start
            progress.note(encoder.name, source.name, shard.index, done)
            fail_point("step")
    finally:
        committer.close()
    stats.seconds = clock.elapsed()
    stats.rows, stats.errors = committer.stats.rows, committer.stats.errors
    stats.shards, stats.commits = committer.stats.shards, committer.stats.commits
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
