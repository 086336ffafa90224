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

A kept listing is checked before it is believed (the job folder lives on a
shared filesystem, where a stale copy or another tool may change it): its
own digest, and its rows against its samples and the tar's size. One that
fails is named in one line and the tar listed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from img_search.atomic import atomic_write
from img_search.data.base import BuildContext
from img_search.failures import first_line

log = logging.getLogger(__name__)

FORMAT = "img_search.tar_listing/2"
META_KEY = b"img_search.tar_listing"
#: Seconds between two lines of progress while listing.
REPORT_EVERY_S = 10.0
#: Rows a sample may give (captions: one per caption of its JSON list); a kept listing with more
#: rows than its samples allow is refused.
MAX_ROWS_PER_SAMPLE = 10_000


@dataclass
class TarListing:
    """What one tar gives: a row per item, the number of samples read, and what could not be used."""

    table: pa.Table
    samples: int
    problems: list[tuple[str, str]]
    #: Whether the tar is compressed (its rows' offsets are then in the decompressed stream).
    compressed: bool = False

    def to_arrow(self, tar_bytes: int | None) -> pa.Table:
        """The listing with what it vouches for (``tar_bytes``: the tar's size then) and its digest."""
        meta = {
            "samples": self.samples,
            "problems": [list(p) for p in self.problems],
            "compressed": self.compressed,
            "tar_bytes": tar_bytes,
        }
        meta["digest"] = digest(self.table, meta)
        return self.table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})

    @classmethod
    def from_arrow(cls, table: pa.Table, tar_bytes: int | None) -> TarListing:
        """A kept listing, if it passes its checks; ``ListingRefused`` naming the first that fails."""
        try:
            meta = json.loads((table.schema.metadata or {})[META_KEY])
            claimed = meta.pop("digest")
            table = table.replace_schema_metadata(None)
            if claimed != digest(table, meta):
                raise ListingRefused("its digest does not match its content")
            listing = cls(
                table,
                int(meta["samples"]),
                [(str(where), str(why)) for where, why in meta["problems"]],
                bool(meta["compressed"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ListingRefused(f"its metadata is not a listing's ({exc})") from None
        if meta["tar_bytes"] != tar_bytes:
            raise ListingRefused(
                f"it was made of {meta['tar_bytes']} bytes, the tar has {tar_bytes}"
            )
        listing.check(tar_bytes)
        return listing

    def check(self, tar_bytes: int | None) -> None:
        """The rows fit the samples and the tar (``ListingRefused`` otherwise)."""
        columns = self.table.column_names
        whole = tar_bytes is not None and not self.compressed
        if whole and self.samples > tar_bytes // 512:  # type: ignore[operator]
            raise ListingRefused(
                f"{self.samples} samples cannot fit in the tar ({tar_bytes} bytes)"
            )
        if self.samples < 0 or self.table.num_rows > max(self.samples, 0) * MAX_ROWS_PER_SAMPLE:
            raise ListingRefused(
                f"{self.samples} samples cannot hold its {self.table.num_rows} rows"
            )
        if "position" in columns:
            positions = self.table.column("position").to_numpy()
            if len(positions) and (
                positions[0] < 0 or positions[-1] >= self.samples or (np.diff(positions) <= 0).any()
            ):
                raise ListingRefused("its positions are not increasing within its samples")
        if "offset" in columns and "size" in columns:
            offsets = self.table.column("offset").to_numpy()
            ends = offsets + self.stored_sizes()
            outside = (offsets < 0) | (ends < offsets)
            if whole:
                outside |= ends > tar_bytes
            if outside.any():
                raise ListingRefused("a member it lists lies outside the tar")

    def stored_sizes(self) -> np.ndarray:
        """Each row's bytes in the tar: its size, or the runs of data of a sparse member's map."""
        sizes = self.table.column("size").to_numpy().astype(np.int64)
        if "sparse" in self.table.column_names:
            for row, runs in enumerate(self.table.column("sparse").to_pylist()):
                if runs is not None:
                    sizes[row] = sum(int(length) for _, length in json.loads(runs))
        return sizes


class ListingRefused(ValueError):
    """A kept listing that fails a check: it is listed again."""


def digest(table: pa.Table, meta: dict[str, Any]) -> str:
    """sha256 of a listing's rows (Arrow IPC, without metadata) and of what it says besides."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
        writer.write_table(table.replace_schema_metadata(None))
    hashed = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    hashed.update(sink.getvalue())
    return hashed.hexdigest()


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


def listing_name(url: str, recipe: str, identity: list[Any]) -> str:
    stem = url.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    digest = hashlib.sha256(json.dumps([FORMAT, identity, recipe]).encode())
    return f"{stem}.{digest.hexdigest()[:16]}.arrow"


@dataclass(frozen=True)
class _Task:
    """One tar to list: its index, url, size (what its kept listing vouches for) and where to keep it."""

    index: int
    url: str
    tar_bytes: int | None
    path: Path | None
    list_tar: ListTar


def list_tars(
    tars: Sequence[str], list_tar: ListTar, context: BuildContext, what: str
) -> list[TarListing]:
    """Every tar's listing, in the order of ``tars``: taken from ``context.folder`` or made here.

    The tars still missing there are listed by ``context.workers`` processes,
    starting at this process's own stretch (``context.slot`` of
    ``context.slots``); each one is kept there as soon as it is made. A kept
    listing that fails its checks is listed again here.
    """
    identities = [tar_identity(url) for url in tars]
    recipe = recipe_of(list_tar)
    folder = context.folder
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    tasks = [
        _Task(
            i,
            url,
            identity[1],
            None if folder is None else folder / listing_name(url, recipe, identity),
            list_tar,
        )
        for i, (url, identity) in enumerate(zip(tars, identities, strict=True))
    ]
    start = context.slot * len(tars) // max(1, context.slots)
    order = [tasks[(start + i) % len(tars)] for i in range(len(tars))]
    todo = [task for task in order if task.path is None or not task.path.is_file()]
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
        made = _list(todo, context.workers, what)
    return [made[task.index] if task.index in made else _kept(task) for task in tasks]


def _list(todo: list[_Task], workers: int, what: str) -> dict[int, TarListing]:
    """The listings made here (those kept in a folder are read back by the caller)."""
    made: dict[int, TarListing] = {}
    progress = _Progress(what, len(todo))
    for index, listing, items in _results(todo, workers):
        if listing is not None:
            made[index] = listing
        progress.advance(items, here=items >= 0)
    progress.close()
    return made


def _results(tasks: list[_Task], workers: int) -> Iterator[tuple[int, TarListing | None, int]]:
    if workers <= 1 or len(tasks) == 1:
        yield from map(_list_one, tasks)
        return
    # fork: the pool inherits the imports (webdataset, and through it torch) instead of redoing them
    context = multiprocessing.get_context("fork")
    # Ctrl-C is the main process's to handle: the workers do not each print a traceback
    ignore = (signal.SIGINT, signal.SIG_IGN)
    with context.Pool(min(workers, len(tasks)), signal.signal, ignore) as pool:
        yield from pool.imap_unordered(_list_one, tasks)


def _list_one(task: _Task) -> tuple[int, TarListing | None, int]:
    """(index, the listing unless kept in a file, items; -1 where another process kept it meanwhile)."""
    if task.path is not None and task.path.is_file():
        return task.index, None, -1
    listing = task.list_tar(task.url)
    if task.path is None:
        return task.index, listing, listing.table.num_rows
    _keep(task, listing)
    return task.index, None, listing.table.num_rows


def _keep(task: _Task, listing: TarListing) -> None:
    table = listing.to_arrow(task.tar_bytes)

    def write(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    atomic_write(task.path, write)  # type: ignore[arg-type]


def _kept(task: _Task) -> TarListing:
    """The kept listing of ``task``, or, when it fails its checks, the tar listed again (and kept)."""
    try:
        return read_listing(task.path, task.tar_bytes)  # type: ignore[arg-type]
    except (ListingRefused, OSError, pa.ArrowException) as exc:
        log.warning(
            "%s: the kept listing %s fails its check (%s): listing the tar again",
            task.url,
            task.path,
            first_line(exc),
        )
    listing = task.list_tar(task.url)
    _keep(task, listing)
    return listing


def read_listing(path: Path, tar_bytes: int | None) -> TarListing:
    """A kept listing, read into memory and checked (a LAION-sized job keeps 10,000: no open files)."""
    with pa.OSFile(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    return TarListing.from_arrow(table, tar_bytes)


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
