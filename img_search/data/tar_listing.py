"""Listing many tars: each tar once, by a pool of processes, kept in a file of its own.

Walking a tar's headers is Python work: about 7,400 img2dataset samples/s
in one process here. A LAION-sized collection (10,000 tars, 100M samples)
would keep one process busy for hours before its first batch, and every
process of a launch would walk it again. So:

- a pool of ``BuildContext.workers`` processes lists the tars, one tar each
  at a time;
- the processes of a job (ranks, array tasks, Ray workers) start on their own
  stretch of the tars, as they do for shards;
- each tar's listing is kept in ``BuildContext.folder`` as an Arrow file
  named after the tar, its size, its modification time and what was asked of
  it. A process takes from there what another one listed, and a rerun lists
  nothing again; a tar that changed is listed anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from img_search.data.base import BuildContext
from img_search.store.atomic import atomic_write

log = logging.getLogger(__name__)

FORMAT = "img_search.tar_listing/1"
META_KEY = b"img_search.tar_listing"
#: Seconds between two lines of progress while listing.
REPORT_EVERY_S = 10.0


@dataclass
class TarListing:
    """What one tar gives: a row per item, the number of samples read, and what could not be used."""

    table: pa.Table
    samples: int
    problems: list[tuple[str, str]]

    def to_arrow(self) -> pa.Table:
        meta = {"samples": self.samples, "problems": [list(p) for p in self.problems]}
        return self.table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})

    @classmethod
    def from_arrow(cls, table: pa.Table) -> TarListing:
        meta = json.loads((table.schema.metadata or {})[META_KEY])
        problems = [(str(where), str(why)) for where, why in meta["problems"]]
        return cls(table.replace_schema_metadata(None), int(meta["samples"]), problems)


#: Lists one tar (a picklable callable: it runs in the pool's processes).
ListTar = Callable[[str], TarListing]


def recipe_of(list_tar: ListTar) -> str:
    """What ``list_tar`` asks of a tar, as part of its listing's file name (its fields, its type)."""
    fields = getattr(list_tar, "__dict__", {})
    return json.dumps([type(list_tar).__qualname__, fields], sort_keys=True, default=str)


def tar_identity(url: str) -> list[Any]:
    """The tar's path, size and modification time: a tar that changed is another listing."""
    if "://" not in url:
        stat = os.stat(url)
        return [os.path.abspath(url), stat.st_size, stat.st_mtime_ns]
    import fsspec

    filesystem, path = fsspec.core.url_to_fs(url)
    info = filesystem.info(path)
    changed = next((info[k] for k in ("mtime", "LastModified", "updated", "ETag") if k in info), "")
    return [url, info.get("size"), str(changed)]


def listing_name(url: str, recipe: str) -> str:
    stem = url.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    digest = hashlib.sha256(json.dumps([FORMAT, tar_identity(url), recipe]).encode())
    return f"{stem}.{digest.hexdigest()[:16]}.arrow"


def list_tars(
    tars: Sequence[str], list_tar: ListTar, context: BuildContext, what: str
) -> list[TarListing]:
    """Every tar's listing, in the order of ``tars``: taken from ``context.folder`` or made here.

    The tars still missing there are listed by ``context.workers`` processes,
    starting at this process's own stretch (``context.slot`` of
    ``context.slots``); each one is kept there as soon as it is made.
    """
    folder = context.folder
    paths: list[Path | None] = [None] * len(tars)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        recipe = recipe_of(list_tar)
        paths = [folder / listing_name(url, recipe) for url in tars]
    start = context.slot * len(tars) // max(1, context.slots)
    order = [(start + i) % len(tars) for i in range(len(tars))]
    todo = [i for i in order if paths[i] is None or not paths[i].is_file()]  # type: ignore[union-attr]
    made: dict[int, TarListing] = {}
    if todo:
        log.info(
            "%s: listing %d of %d tars (%d already listed) with %d process(es)",
            what,
            len(todo),
            len(tars),
            len(tars) - len(todo),
            min(context.workers, len(todo)),
        )
        made = _list(todo, tars, paths, list_tar, context.workers, what)
    return [made[i] if i in made else read_listing(paths[i]) for i in range(len(tars))]  # type: ignore[arg-type]


def _list(
    todo: list[int],
    tars: Sequence[str],
    paths: list[Path | None],
    list_tar: ListTar,
    workers: int,
    what: str,
) -> dict[int, TarListing]:
    """The listings made here (those kept in a folder are read back by the caller)."""
    tasks = [(i, tars[i], list_tar, paths[i]) for i in todo]
    made: dict[int, TarListing] = {}
    progress = _Progress(what, len(todo))
    for index, listing, items in _results(tasks, workers):
        if listing is not None:
            made[index] = listing
        progress.advance(items, here=items >= 0)
    progress.close()
    return made


def _results(
    tasks: list[tuple[int, str, ListTar, Path | None]], workers: int
) -> Iterator[tuple[int, TarListing | None, int]]:
    if workers <= 1 or len(tasks) == 1:
        yield from map(_list_one, tasks)
        return
    # fork: the pool inherits the imports (webdataset, and through it torch) instead of redoing them
    context = multiprocessing.get_context("fork")
    with context.Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap_unordered(_list_one, tasks)


def _list_one(task: tuple[int, str, ListTar, Path | None]) -> tuple[int, TarListing | None, int]:
    """(index, the listing unless kept in a file, items; -1 where another process kept it meanwhile)."""
    index, url, list_tar, path = task
    if path is not None and path.is_file():
        return index, None, -1
    listing = list_tar(url)
    if path is None:
        return index, listing, listing.table.num_rows
    table = listing.to_arrow()

    def write(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    atomic_write(path, write)
    return index, None, table.num_rows


def read_listing(path: Path) -> TarListing:
    """A kept listing, read into memory (a LAION-sized job keeps 10,000 of them: no open files)."""
    with pa.OSFile(str(path)) as source:
        return TarListing.from_arrow(pa.ipc.open_file(source).read_all())


class _Progress:
    """A line every ``REPORT_EVERY_S`` seconds while tars are listed, and one at the end."""

    def __init__(self, what: str, tars: int) -> None:
        self.what, self.tars = what, tars
        self.done = self.here = self.items = 0
        self.started = self.reported = time.monotonic()

    def advance(self, items: int, here: bool) -> None:
        self.done += 1
        self.here += here
        self.items += max(0, items)
        if time.monotonic() - self.reported >= REPORT_EVERY_S:
            self._report()
            self.reported = time.monotonic()

    def close(self) -> None:
        self._report()
        log.info(
            "%s: %d tar(s) listed here, %d by other processes meanwhile",
            self.what,
            self.here,
            self.done - self.here,
        )

    def _report(self) -> None:
        seconds = max(time.monotonic() - self.started, 1e-9)
        log.info(
            "%s: listed %d/%d tars, %d items, %.0f items/s",
            self.what,
            self.done,
            self.tars,
            self.items,
            self.items / seconds,
        )
