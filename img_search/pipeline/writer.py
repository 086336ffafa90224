"""The writer of one (model, dataset) pass: the process that embedded a shard writes its part file(s)
and its completion record.

A shard's rows stream into a part file as batches come back from the model;
the shard is committed when its last window is in, and also every
``tasks.commit_every_s`` while it runs (each commit closes the current part,
renames it into place, then replaces the shard's record, which names the
parts — with their rows, size and sha256 —, the position ranges done and the
errors so far: ``state/record.py``). A part file that no record names — its writer
died before the record was written — is ignored and deleted with the job
state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from img_search.embedding import Encoder
from img_search.faults import fail_point
from img_search.pipeline.plan import Job
from img_search.pipeline.reader.stream import Batch
from img_search.pipeline.state.claims import PairClaims, ShardTask, merge_ranges
from img_search.pipeline.state.record import CompletionRecord, PartRef, part_name
from img_search.pipeline.state.verify import part_digest
from img_search.store import PartWriter

log = logging.getLogger(__name__)


@dataclass
class OpenShard:
    task: ShardTask
    windows_left: int
    record: CompletionRecord
    writer: PartWriter | None = None
    started: float = field(default_factory=time.perf_counter)


@dataclass
class CommitStats:
    shards: list[int] = field(default_factory=list)  # shards this process finished
    commits: int = 0
    rows: int = 0
    errors: int = 0
    lost: list[int] = field(default_factory=list)  # shards another process took over


class ShardWriter:
    """The open shards of one (model, dataset) pass of this process: their parts and their commits.

    Batches come from the reader (``reader/loader.py``) carrying their
    shard's ``task`` and ``windows_in_shard``: a shard opens with its first
    batch and is committed with its last.
    """

    def __init__(
        self,
        claims: PairClaims,
        make_writer: Any,
        commit_every_s: float,
        problems: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.claims = claims
        self.make_writer = make_writer  # (part file name) → PartWriter
        self.commit_every_s = commit_every_s
        self.problems = [list(p) for p in problems]  # build-time problems belong to shard 0
        self.open: dict[int, OpenShard] = {}
        self.stats = CommitStats()
        self._last_commit = time.monotonic()

    def add(self, batch: Batch, vectors: np.ndarray | None, extra: dict[str, Any] | None) -> int:
        """Take one window's results; commit the shard when it was the last one.

        Returns the positions of the batch's shard done so far (all of them
        once it is committed or lost), for the job's progress.
        """
        k, task = batch.claim, batch.task
        if task is None:
            raise ValueError(
                f"batch of window {batch.window} names no shard task (not from a Reader)"
            )
        shard = self.open.get(k) or self._open(k, task, batch.windows_in_shard)
        if batch.ids:
            if shard.writer is None:
                shard.writer = self.make_writer(self._part_name(shard))
            shard.writer.write(batch.ids, vectors, extra)
            self.stats.rows += len(batch.ids)
        self._add_errors(shard, batch.failures)
        record = shard.record
        record.done = merge_ranges([*record.done, list(batch.window)])
        record.skipped += batch.window[1] - batch.window[0] - len(batch.ids) - len(batch.failures)
        shard.windows_left -= 1
        if shard.windows_left == 0:
            self._commit(k, final=True)
        elif time.monotonic() - self._last_commit >= self.commit_every_s:
            for open_k in list(self.open):
                self._commit(open_k, final=False)
        still_open = self.open.get(k)
        return still_open.record.positions_done if still_open else len(task.shard)

    def close(self) -> None:
        """End of the pass: anything still open (a lost shard) is discarded."""
        for shard in self.open.values():
            if shard.writer is not None:
                shard.writer.abort()
        self.open.clear()

    def _open(self, k: int, task: ShardTask, n_windows: int) -> OpenShard:
        earlier = task.record  # what the previous holder committed (it covers this shard)
        if earlier is not None:
            record = replace(earlier, parts=[*earlier.parts], errors=[*earlier.errors])
        else:
            record = CompletionRecord(
                model=self.claims.model,
                dataset=self.claims.dataset,
                shard=task.shard.index,
                start=task.shard.start,
                stop=task.shard.stop,
                label=task.shard.label,
            )
        shard = OpenShard(task=task, windows_left=n_windows, record=record)
        if earlier is None and task.shard.index == 0:
            self._add_errors(shard, self.problems)
            record.problems = len(self.problems)
        self.open[k] = shard
        return shard

    def _add_errors(self, shard: OpenShard, failures: Sequence[Sequence[str]]) -> None:
        shard.record.errors.extend([list(f) for f in failures])
        self.stats.errors += len(failures)
        for item_id, reason in failures:
            log.warning("skipped %s in %s: %s", item_id, self.claims.dataset, reason)

    def _part_name(self, shard: OpenShard) -> str:
        claims, task = self.claims, shard.task
        return part_name(
            claims.model, claims.dataset, task.shard.index, task.generation, len(shard.record.parts)
        )

    def _commit(self, k: int, final: bool) -> None:
        shard = self.open[k]
        record = shard.record
        if shard.writer is not None:
            rows = shard.writer.close()
            path = shard.writer.path
            part = PartRef(path.name, rows, path.stat().st_size, part_digest(path))
            record.parts.append(part)
            record.rows += rows
            shard.writer = None
        task = shard.task
        record.final = final
        record.owner = self.claims.ledger.me.id if self.claims.ledger.me else None
        record.generation = task.generation
        self._last_commit = time.monotonic()
        if not self.claims.write_record(task, record):
            log.warning(
                "shard %d of %s × %s was taken over by another process; this copy is dropped",
                task.shard.index,
                self.claims.model,
                self.claims.dataset,
            )
            self.stats.lost.append(task.shard.index)
            del self.open[k]
            return
        self.stats.commits += 1
        if final:
            self.stats.shards.append(task.shard.index)
            del self.open[k]
        fail_point("commit")


def part_writers(job: Job, encoder: Encoder, source: Any) -> Any:
    """Part file name → a ``PartWriter`` of this pair (plain-list vectors in a folder table)."""

    def make(name: str) -> PartWriter:
        job.layout.parts_dir.mkdir(parents=True, exist_ok=True)
        return PartWriter(
            job.layout.parts_dir / name,
            encoder.name,
            source.name,
            output_dtype=job.settings.output_dtype,
            extra_fields=job.modality.extra_fields,
            fixed_size=not job.layout.is_folder,
        )

    return make
