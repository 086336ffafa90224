"""Shards of one (model, dataset): who embeds which, and what is done — on the filesystem, no coordinator.

- A *claim* is a file ``claims/<model>/<dataset>/<shard>.<generation>``,
  created exclusively (``Ledger.take``): of several processes trying, exactly
  one gets generation 0 of a shard. A claim whose owner is dead is taken over
  by creating the next generation, again exclusively, so a shard has one
  owner at a time however many processes race for it.
- A *completion record* ``records/<model>/<dataset>/<shard>.json``
  (``record.py``) is the commit point of a shard: the part files that hold
  its rows, the position ranges they cover, its errors, and whether the
  shard is finished. It is replaced atomically at every commit (every
  ``tasks.commit_every_s`` for a long shard), so what is done is known by
  position range, and a part file no record names does not count. A record
  that is not usable is read as absent, and its shard is redone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from img_search.atomic import atomic_write_text
from img_search.data.base import Shard
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.record import CompletionRecord, load_record, unusable
from img_search.pipeline.state.state_files import read_json, warn_once


@dataclass
class ShardTask:
    """A claimed shard and what an earlier run already committed of it."""

    shard: Shard
    generation: int
    record: CompletionRecord | None = None

    @property
    def done(self) -> list[list[int]]:
        return [list(r) for r in self.record.done] if self.record else []


def merge_ranges(ranges: Sequence[Sequence[int]]) -> list[list[int]]:
    merged: list[list[int]] = []
    for start, stop in sorted((int(a), int(b)) for a, b in ranges if b > a):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return merged


class PairClaims:
    """Claims and completion records of one (model, dataset) pair."""

    def __init__(
        self,
        ledger: Ledger,
        model: str,
        dataset: str,
        shards: Sequence[Shard],
        rank: int = 0,
        ranks: int = 1,
    ) -> None:
        self.ledger, self.model, self.dataset = ledger, model, dataset
        self.shards = list(shards)
        if any(shard.index != i for i, shard in enumerate(self.shards)):
            raise ValueError("shards must be numbered 0, 1, 2, … in order")
        self.records_dir = ledger.path("records", model, dataset)
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self._order = claim_order(self.shards, rank, ranks)
        self._cursor = 0
        self._held_by_others: list[int] = []
        self._looked_again = False

    # -- records ------------------------------------------------------------------
    def record_path(self, index: int) -> Path:
        return self.records_dir / f"{index:06d}.json"

    def record(self, index: int) -> CompletionRecord | None:
        return load_record(self.record_path(index), self.model, self.dataset, index)

    def records(self) -> Iterator[CompletionRecord]:
        for shard in self.shards:
            record = self.record(shard.index)
            if record is not None:
                yield record

    def committed_rows(self) -> int:
        return sum(r.rows for r in self.records())

    def finished(self, index: int) -> bool:
        record = self.record(index)
        return record is not None and record.final

    def unfinished(self) -> list[int]:
        return [s.index for s in self.shards if not self.finished(s.index)]

    def unusable(self) -> list[int]:
        """Shards whose record file is there but not usable (named once): to be redone."""
        paths = ((s.index, self.record_path(s.index)) for s in self.shards)
        return [i for i, path in paths if unusable(path, self.model, self.dataset, i)]

    def write_record(self, task: ShardTask, record: CompletionRecord) -> bool:
        """Commit ``record`` for ``task``'s shard, unless another process took the shard over."""
        if not self.still_mine(task):
            return False
        atomic_write_text(self.record_path(task.shard.index), record.to_json())
        task.record = record
        return True

    def redo(self, index: int, why: str) -> None:
        """Send a finished shard back: its claim to nobody, its record away (its parts stay until
        the job state goes, in case another record names them)."""
        self.ledger.release(self.claim_name(index), why)
        self.record_path(index).unlink(missing_ok=True)

    # -- claims -------------------------------------------------------------------
    def claim_name(self, index: int) -> str:
        return f"{self.model}/{self.dataset}/{index:06d}"

    def still_mine(self, task: ShardTask) -> bool:
        return self.ledger.holds(self.claim_name(task.shard.index), task.generation)

    def claim_next(self) -> ShardTask | None:
        """The next shard nobody alive holds and nobody finished, claimed for this process.

        Walks ``claim_order``; shards held by others are looked at again at
        the end (``_look_again``), in case their owner died meanwhile.
        """
        while True:
            if self._cursor < len(self._order):
                index = self._order[self._cursor]
                self._cursor += 1
            elif self._held_by_others and self._look_again():
                continue
            else:
                return None
            if self.finished(index):
                continue
            generation = self.ledger.take(self.claim_name(index))
            if generation is None:
                self._held_by_others.append(index)
                continue
            record = self.record(index)  # read after the claim: the previous holder's last commit
            if record is None or not record.final:
                return ShardTask(self.shards[index], generation, self._fits(record))

    def _fits(self, record: CompletionRecord | None) -> CompletionRecord | None:
        """``record``, if it covers its shard as this job cuts it (else named, and redone)."""
        if record is None:
            return None
        shard = self.shards[record.shard]
        if (record.start, record.stop) == (shard.start, shard.stop):
            return record
        warn_once(
            self.record_path(shard.index),
            f"it covers positions {record.start}-{record.stop}, and the shard {shard.start}-"
            f"{shard.stop}; shard {shard.index} of {self.model} × {self.dataset} is redone",
        )
        return None

    def _look_again(self) -> bool:
        """Walk the shards others held once more: once, then while an owner of one is silent.

        A silent owner (``Ledger.silent``: another machine's process that
        stopped beating) is waited for until it beats again or its lease runs
        out, so a process started right after a crash elsewhere takes its
        shards over instead of leaving them to a dead process.
        """
        held, self._held_by_others = self._held_by_others, []
        if self._looked_again:

            def owners() -> list[str | None]:
                return [self.ledger.holder(self.claim_name(i)) for i in held]

            if not any(self.ledger.silent(owner) for owner in owners()):
                return False
            self.ledger.outwait(owners)
        self._order, self._cursor, self._looked_again = held, 0, True
        return True


def committed_by(ledger: Ledger) -> bool:
    """Whether this process wrote any completion record of the job."""
    me = ledger.me.id if ledger.me is not None else None
    return any(
        (read_json(path) or {}).get("owner") == me
        for path in ledger.path("records").rglob("*.json")
    )


def claim_order(shards: Sequence[Shard], rank: int, ranks: int) -> list[int]:
    """The order in which the process in slot ``rank`` of ``ranks`` looks at the shards.

    A slot is a rank of the launch, spread over a Slurm array's tasks
    (``engines.start_slot``). The full-size shards from the slot's own
    stretch onwards, wrapping, so the processes start apart and a fast one
    goes on taking shards where the slower ones have not got to; then the
    shrinking tail (``position_shards``), in order, so everyone's last
    shards are the short ones.
    """
    body = [s.index for s in shards if not s.tail]
    tail = [s.index for s in shards if s.tail]
    start = rank * len(body) // max(1, ranks)
    return body[start:] + body[:start] + tail


def pair_claims(ledger: Ledger, model: str, dataset: str) -> PairClaims:
    """The claims of a pair, with its shards as the job agreed on them (by count)."""
    count = agreed_shards(ledger, dataset) or 0
    return PairClaims(ledger, model, dataset, [Shard(i, 0, 0) for i in range(count)])


def agreed_shards(ledger: Ledger, dataset: str) -> int | None:
    """How many shards the job cut ``dataset`` into; None until its listing is recorded."""
    shards = (ledger.agreed(f"listing-{dataset}") or {}).get("shards")
    return shards if isinstance(shards, int) and not isinstance(shards, bool) else None
