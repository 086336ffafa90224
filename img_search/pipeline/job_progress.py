"""The job's progress as its completion records tell it, shown by one process of a launch.

Every process commits its own shards (``writer.py``), so the completion
records on the output's filesystem are the one count of what the whole job
has done, whichever engine started its processes: the ranks of a launch,
Slurm array tasks, Ray actors, or other launches on the same output. The
main process of a launch (the Ray driver) reads them in a thread of its
own — no collective call, nothing sent between processes — and shows one
bar (on a terminal) or one line every ``logging.progress_every_s`` (off it)
per (model, dataset): the job's items done of its total, their rate in this
run, the time left, the shards committed and the errors.

Between two reads the shards this process has open count as far as it has
embedded them (``note``), so a one-process run moves batch by batch. A
finished shard's record is read once; the others again only when they
change, so a read costs one directory listing per pair.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from img_search.console import OUTPUT, chatty, interactive, make_progress
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.record import load_record

#: Seconds between two reads of the records under a bar (off a terminal: a quarter of
#: ``logging.progress_every_s``); at least ten times what the last read took.
BAR_POLL_S = 1.0


@dataclass(frozen=True)
class ShardCount:
    """What one shard's record vouches for."""

    positions: int
    rows: int
    errors: int
    final: bool


class PairRecords:
    """The completion records of one (model, dataset), read again only where they changed."""

    def __init__(self, records_dir: Path, model: str, dataset: str) -> None:
        self.dir, self.model, self.dataset = records_dir, model, dataset
        self._read: dict[str, tuple[tuple[int, int], ShardCount]] = {}

    def read(self) -> dict[int, ShardCount]:
        """Shard index → its count; the last counts where the folder is gone (the table is done)."""
        try:
            entries = list(os.scandir(self.dir))
        except (FileNotFoundError, NotADirectoryError):
            return self._counts()
        names = set()
        for entry in entries:
            name = entry.name
            if not (name.endswith(".json") and name[:-5].isdigit()):
                continue  # a record being written (atomic_write_text's temporary name)
            names.add(name)
            known = self._read.get(name)
            if known is not None and known[1].final:
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            key = (stat.st_mtime_ns, stat.st_size)
            if known is not None and known[0] == key:
                continue
            record = load_record(Path(entry.path), self.model, self.dataset, int(name[:-5]))
            if record is None:
                self._read.pop(name, None)
                continue
            count = ShardCount(record.positions_done, record.rows, len(record.errors), record.final)
            self._read[name] = (key, count)
        for gone in set(self._read) - names:  # sent back to be redone (finalize.py)
            del self._read[gone]
        return self._counts()

    def _counts(self) -> dict[int, ShardCount]:
        return {int(name[:-5]): count for name, (_, count) in self._read.items()}


def committed(state_dir: Path) -> tuple[int, int]:
    """(shards finished, rows kept) over every (model, dataset) of the job state in ``state_dir``."""
    shards = rows = 0
    records = state_dir / "records"
    for model in sorted(p for p in records.glob("*") if p.is_dir()):
        for dataset in sorted(p for p in model.glob("*") if p.is_dir()):
            counts = PairRecords(dataset, model.name, dataset.name).read().values()
            shards += sum(c.final for c in counts)
            rows += sum(c.rows for c in counts)
    return shards, rows


@dataclass
class PairView:
    """One (model, dataset) as shown: its records, this process's open shards, its bar or line."""

    records: PairRecords
    total: int | None = None
    shards: int | None = None
    disk: dict[int, ShardCount] = field(default_factory=dict)
    #: Positions done of the shards this process has open or finished (ahead of their records).
    mine: dict[int, int] = field(default_factory=dict)
    #: The table is finished: every item of the pair is in it or in its errors.
    complete: bool = False
    errors: int | None = None
    task: Any = None
    first: tuple[int, float] | None = None  # (done, when) as first seen: where the rate starts

    @property
    def done(self) -> int:
        if self.complete and self.total is not None:
            return self.total
        shards = set(self.disk) | set(self.mine)
        return sum(
            max(self.disk[s].positions if s in self.disk else 0, self.mine.get(s, 0))
            for s in shards
        )

    def detail(self) -> str:
        finished = sum(c.final for c in self.disk.values())
        if self.complete and self.shards is not None:
            finished = self.shards
        errors = sum(c.errors for c in self.disk.values()) if self.errors is None else self.errors
        shards = "?" if self.shards is None else self.shards
        return f"{finished}/{shards} shards committed, {errors:,} errors"


class JobProgress:
    """The job's bars or lines on the main process of a launch; inert elsewhere (``enabled``)."""

    def __init__(self, ledger: Ledger, pairs: Iterable[tuple[str, str]], enabled: bool) -> None:
        self.ledger = ledger
        self.enabled = enabled and chatty()
        self.pairs: dict[tuple[str, str], PairView] = {}
        for model, dataset in pairs:
            self._view(model, dataset)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._display: Any = None

    def __enter__(self) -> JobProgress:
        if self.enabled:
            self._display = make_progress(enabled=True).__enter__()
            self._thread = threading.Thread(
                target=self._poll_forever, name="img_search-progress", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=30)
            self._thread = None
        if self._display is not None:
            self._display.__exit__(None, None, None)
            self._display = None

    def start(self, model: str, dataset: str, total: int) -> None:
        """This process begins the pair: shown from now on, whatever others did."""
        if not self.enabled:
            return
        with self._lock:
            view = self._view(model, dataset)
            view.total = total
            self._read(view)
            if view.task is None:
                self._show(model, dataset, view)

    def note(self, model: str, dataset: str, shard: int, positions: int) -> None:
        """This process has done ``positions`` of ``shard`` (committed or not yet)."""
        if self.enabled:
            with self._lock:
                self._view(model, dataset).mine[shard] = positions

    def poll(self) -> None:
        """Read the records of every pair; show a pair once someone works on it."""
        if not self.enabled:
            return
        with self._lock:
            for (model, dataset), view in self.pairs.items():
                if not self._read(view):
                    continue
                if view.task is not None:
                    self._update(view)
                elif view.first is not None and view.done != view.first[0]:
                    self._show(model, dataset, view)

    def end(self, outcome: Any) -> None:
        """The launch's last count; a finished table holds every item of every pair (the
        finaliser checked), in rows or in its errors."""
        if not self.enabled:
            return
        self.poll()
        if not getattr(outcome, "finished", False):
            return
        errors = {(p["model"], p["dataset"]): int(p["errors"]) for p in outcome.pairs or []}
        listings = getattr(outcome, "listings", None) or {}
        with self._lock:
            for (model, dataset), view in self.pairs.items():
                listing = listings.get(dataset) or {}  # a table finished before a first read
                view.total = view.total or listing.get("items")
                view.shards = view.shards if view.shards is not None else listing.get("shards")
                if view.total is None:
                    continue
                view.complete, view.errors = True, errors.get((model, dataset))
                if view.task is None:
                    self._show(model, dataset, view)
                else:
                    self._update(view)

    # -- inside the lock ----------------------------------------------------------------
    def _view(self, model: str, dataset: str) -> PairView:
        if (model, dataset) not in self.pairs:
            records = PairRecords(self.ledger.path("records", model, dataset), model, dataset)
            self.pairs[(model, dataset)] = PairView(records)
        return self.pairs[(model, dataset)]

    def _read(self, view: PairView) -> bool:
        """Refresh ``view`` from its records; False while its dataset has no listing yet."""
        if view.total is None or view.shards is None:
            listing = self.ledger.agreed(f"listing-{view.records.dataset}") or {}
            view.total = view.total or listing.get("items")
            view.shards = listing.get("shards")
            if view.total is None:
                return False
        view.disk = view.records.read()
        if view.first is None:
            view.first = (view.done, time.monotonic())
        return True

    def _show(self, model: str, dataset: str, view: PairView) -> None:
        view.first = (view.done, time.monotonic())
        view.task = self._display.add_task(f"{model} × {dataset}", total=view.total, rate="")
        self._update(view)

    def _update(self, view: PairView) -> None:
        done = view.done
        start, since = view.first or (done, time.monotonic())
        rate = (done - start) / max(time.monotonic() - since, 1e-9)
        self._display.update(
            view.task,
            completed=done,
            total=view.total,
            rate=f"{rate:,.1f} items/s" if done > start else "",
            detail=view.detail(),
        )

    def _poll_forever(self) -> None:
        every = BAR_POLL_S if interactive() else max(BAR_POLL_S, OUTPUT.progress_every_s / 4)
        wait = every
        while not self._stop.wait(wait):
            started = time.monotonic()
            self.poll()
            wait = max(every, 10 * (time.monotonic() - started))
