"""Reading one tar: its samples in order from the headers, and a member's bytes only when asked for.

A tar holds samples: consecutive members that share a key
(``000000012.jpg``, ``000000012.txt``, ``000000012.json``), grouped as
WebDataset groups them. Whatever one sample holds, the walk goes on and the
sample is accounted for: a member name that is not UTF-8, a link, a member
over the size limit or behind an oversized header gives its sample a reason
(an error row), never an exception. Where the tar itself stops being
readable (cut short, a damaged header) is ``damage``; what it lost is named
from img2dataset's ``<stem>.parquet`` beside the tar, if there is one.

A member's bytes are read from where the listing found them (``Span``), and
the 512 bytes before them are checked against what they were then: a tar
that was cut or rewritten since it was listed gives an error naming the tar
and the byte, never another member's bytes. A GNU sparse member (``tar
--sparse``) is read with its holes filled in.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pyarrow as pa

from img_search.data.limits import over_limit
from img_search.data.tar_headers import (
    MAX_SPARSE_ENTRIES,
    BoundedTarFile,
    HeaderRefused,
    decompressed,
)
from img_search.data.tar_urls import is_remote, open_binary, tar_stem
from img_search.failures import first_line

log = logging.getLogger(__name__)

#: Members WebDataset itself skips (``__index__`` and the like).
META_MEMBER = re.compile(r"__[^/]*__($|/)")
#: What reading a damaged tar raises (a cut gzip stream raises EOFError or zlib.error; a
#: garbled header, ValueError or IndexError inside tarfile's parsers).
TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, IndexError)
KINDS = {
    tarfile.LNKTYPE: "a hard link",
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
}


class TarChanged(OSError):
    """A member is not where, or not what, the listing found: the tar changed since."""


@dataclass(frozen=True)
class TarDamage:
    """Where a tar stops being readable, and what tarfile said."""

    offset: int
    reason: str

    def __str__(self) -> str:
        return f"tar truncated/corrupt at byte {self.offset}: {self.reason}"


@dataclass(frozen=True)
class Span:
    """Where a member's bytes lie: ``stored`` bytes from ``offset``, ``size`` once holes are filled."""

    offset: int
    size: int
    check: int  # crc32 of the 512 bytes before ``offset`` (the member's header) when listed
    sparse: tuple[tuple[int, int], ...] | None = None  # (offset, length) of each run of data

    @property
    def stored(self) -> int:
        return self.size if self.sparse is None else sum(length for _, length in self.sparse)

    def sparse_json(self) -> str | None:
        return None if self.sparse is None else json.dumps(self.sparse)


@dataclass
class TarSample:
    position: int  # the sample's index in its tar
    key: str  # as tarfile decoded it (bytes not UTF-8 as surrogates); ids use ``printable(key)``
    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)  # extension → member
    #: Why no member of this sample is read (its name is not UTF-8); None: it is read.
    problem: str | None = None

    def has(self) -> str:
        return ", ".join(self.members)


def printable(text: str) -> str:
    """A name as tarfile decoded it (undecodable bytes as surrogates), with those bytes as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_text(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate, which no UTF-8 encoder takes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def refusal(info: tarfile.TarInfo, limit: int, setting: str) -> str | None:
    """Why ``info``'s bytes are not read (a link, a device, over ``limit``), or None."""
    refused = getattr(info, "refused", None)
    if refused:
        return f"{printable(info.name)}: {refused}"
    kind = KINDS.get(info.type)
    if kind is not None:
        target = f" to {printable(info.linkname)!r}" if info.islnk() or info.issym() else ""
        return f"{printable(info.name)} is {kind}{target}: link and device members are not read"
    if info.size < 0:
        return f"{printable(info.name)}: its header gives a negative size ({info.size})"
    if info.size > limit:
        return over_limit(f"member {printable(info.name)}", info.size, limit, setting)
    if info.issparse() and not valid_sparse(info.sparse or [], info.size):
        return f"{printable(info.name)}: its sparse map does not fit in its {info.size} bytes"
    return None


def valid_sparse(runs: list[tuple[int, int]], size: int) -> bool:
    end = 0
    for offset, length in runs:
        if length and (offset < end or offset + length > size):
            return False
        end = offset + length if length else end
    return len(runs) <= MAX_SPARSE_ENTRIES


def span_of(info: tarfile.TarInfo) -> Span:
    """Where ``info``'s bytes lie, and the crc of the header block before them (``BoundedTarInfo``)."""
    runs = tuple((o, n) for o, n in info.sparse or () if n) if info.issparse() else None
    return Span(info.offset_data, info.size, getattr(info, "check", 0), runs)


class TarReader:
    """One tar's samples in order, from its headers; a member's bytes only when asked for.

    Only members whose data is all there are given; where the tar stops
    being readable (cut short, a damaged header, no end-of-archive marker)
    is ``damage`` once ``samples()`` is exhausted; ``notes`` says what of
    its headers was ignored (bounds of ``tar_headers``). The members ``keep``
    says yes to are read as the walk meets them (``member_data``): a
    compressed tar is then decompressed once, forward.
    """

    def __init__(self, url: str, keep: Callable[[tarfile.TarInfo], bool] | None = None) -> None:
        self.url, self.keep = url, keep
        self.damage: TarDamage | None = None
        self.notes: list[str] = []
        self.compressed = False  # offsets are then in the decompressed stream
        self._raw: IO[bytes] | None = None
        self._stream: IO[bytes] | None = None
        self._tar: BoundedTarFile | None = None

    def __enter__(self) -> TarReader:
        try:
            self._raw = open_binary(self.url)
            self._stream = decompressed(self._raw)
            self.compressed = self._stream is not self._raw
            self._tar = BoundedTarFile(self._stream)
        except TAR_ERRORS as exc:
            self.damage = TarDamage(0, first_line(exc))
        return self

    def __exit__(self, *exc: object) -> None:
        for closing in (self._tar, self._stream, self._raw):
            if closing is not None:
                closing.close()

    def stream(self) -> IO[bytes]:
        if self._stream is None:
            raise TarChanged(f"{self.url} cannot be read: {self.damage}")
        return self._stream

    def samples(self) -> Iterator[TarSample]:
        # webdataset imports torch: only here, so that --help does not wait for it
        from webdataset.tariterators import base_plus_ext

        current: TarSample | None = None
        for info in self._members():
            if info.isdir() or META_MEMBER.match(info.name):
                continue
            key, extension = base_plus_ext(info.name)
            if key is None:
                continue
            if current is None or key != current.key:
                if current is not None:
                    yield current
                current = TarSample(0 if current is None else current.position + 1, key)
                if not is_text(key):
                    current.problem = (
                        f"the member name '{printable(info.name)}' is not UTF-8 "
                        "(item ids are text): not read"
                    )
            current.members.setdefault(extension.lower(), info)
        if current is not None:
            yield current

    def _members(self) -> Iterator[tarfile.TarInfo]:
        """Every member whose data is all there: ``next()`` checks the previous one's before reading on."""
        tar, pending = self._tar, None
        if tar is None:
            return
        try:
            while (info := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every member it read: not one is needed
                if self.keep is not None and self.keep(info):
                    info.data = self._data_here(info)  # type: ignore[attr-defined]
                if pending is not None:
                    yield pending
                pending = info
        except (*TAR_ERRORS, HeaderRefused, RecursionError) as exc:
            where = tar.offset if pending is None else pending.offset
            name = "" if pending is None else f"{printable(pending.name)}: "
            self.damage = TarDamage(where, f"{name}{first_line(exc)}")
            return
        finally:
            self.notes = tar.notes
        if pending is not None:
            yield pending
        # tarfile ends quietly at a cut or garbled header; a whole tar ends with a zero block
        tar.fileobj.seek(tar.offset)
        if tar.fileobj.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
            self.damage = TarDamage(tar.offset, "no tar header and no end-of-archive marker here")

    def _data_here(self, info: tarfile.TarInfo) -> bytes | None:
        """The bytes of the member whose header was just read (None when cut short, where the walk
        stops, or when its sparse map does not fit its size, which ``refusal`` names)."""
        span = span_of(info)
        if span.sparse is not None and not valid_sparse(list(span.sparse), span.size):
            return None
        stream = self.stream()
        stream.seek(span.offset)
        data = stream.read(span.stored)
        return None if len(data) != span.stored else fill_holes(memoryview(data), span)

    def read(self, span: Span) -> bytes:
        """The member's bytes (holes filled in); ``TarChanged`` when they are not what was listed."""
        stream = self.stream()
        header = span.offset - tarfile.BLOCKSIZE
        try:
            stream.seek(header)
            data = stream.read(tarfile.BLOCKSIZE + span.stored)
        except TAR_ERRORS as exc:
            raise TarChanged(
                f"{self.url} cannot be read at byte {header} ({first_line(exc)}): "
                "the tar changed since it was listed"
            ) from None
        if len(data) != tarfile.BLOCKSIZE + span.stored:
            raise TarChanged(
                f"{self.url} ends before byte {span.offset + span.stored}, where this member "
                "ends: the tar was cut since it was listed"
            )
        if zlib.crc32(data[: tarfile.BLOCKSIZE]) != span.check:
            raise TarChanged(
                f"{self.url}: the header at byte {header} is not the one listed there: "
                "the tar changed since it was listed"
            )
        return fill_holes(memoryview(data)[tarfile.BLOCKSIZE :], span)


def member_data(info: tarfile.TarInfo) -> bytes | None:
    """What the walk read of ``info`` (``TarReader``'s ``keep``), or None."""
    return getattr(info, "data", None)


def fill_holes(stored: memoryview, span: Span) -> bytes:
    """A sparse member's bytes: its runs of data where its map puts them, zeros in the holes."""
    if span.sparse is None:
        return bytes(stored)
    filled, start = bytearray(span.size), 0
    for offset, length in span.sparse:
        filled[offset : offset + length] = stored[start : start + length]
        start += length
    return bytes(filled)


class TarWalk:
    """One tar's samples in order, a repeated key excepted; what was lost goes to ``problems``."""

    def __init__(self, url: str, keep: Callable[[tarfile.TarInfo], bool] | None = None) -> None:
        self.url, self.keep = url, keep
        self.samples = 0  # samples read (the positions of its shard)
        self.problems: list[tuple[str, str]] = []
        self.compressed = False

    def __iter__(self) -> Iterator[tuple[TarReader, TarSample]]:
        url, stem, first = self.url, tar_stem(self.url), {}
        with TarReader(url, self.keep) as reader:
            for sample in reader.samples():
                self.samples = sample.position + 1
                earlier = first.setdefault(sample.key, sample.position)
                if earlier != sample.position:
                    self.problems.append(
                        (
                            f"{stem}/{printable(sample.key)}",
                            f"the key is repeated in {url} (samples {earlier} and "
                            f"{sample.position}): only the first is used",
                        )
                    )
                    continue
                yield reader, sample
        self.compressed = reader.compressed
        for note in reader.notes:
            log.warning("%s: %s", url, note)
        if reader.damage is not None:
            self.problems += lost_samples(url, {printable(k) for k in first}, reader.damage)


def lost_samples(url: str, listed: set[str], damage: TarDamage) -> list[tuple[str, str]]:
    """Error rows for what a damaged tar lost: each downloaded key of its img2dataset Parquet, or the tar."""
    stem = tar_stem(url)
    downloaded = downloaded_keys(url)
    if downloaded is None:
        return [
            (
                url.rsplit("/", 1)[-1],
                f"{damage}; the samples after it are lost ({url}, no {stem}.parquet beside it "
                "to name them)",
            )
        ]
    lost = [key for key in downloaded if key not in listed]
    if not lost:
        log.warning("%s: %s; every sample %s.parquet lists was read", url, damage, stem)
    reason = f"{damage}; {stem}.parquet lists this sample as downloaded, the tar lost it"
    return [(f"{stem}/{key}", reason) for key in lost]


def downloaded_keys(url: str) -> list[str] | None:
    """The ``key`` of every row with ``status == "success"`` in img2dataset's ``<stem>.parquet`` beside the tar."""
    if is_remote(url):
        return None
    manifest = Path(url).expanduser().with_name(f"{tar_stem(url)}.parquet")
    if not manifest.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        columns = pq.read_schema(manifest).names
        table = pq.read_table(manifest, columns=[c for c in ("key", "status") if c in columns])
        keys = table.column("key").to_pylist()
    except (OSError, KeyError, pa.ArrowException) as exc:
        log.warning("%s: not an img2dataset table with a key column: %s", manifest, exc)
        return None
    if "status" not in columns:
        return [str(k) for k in keys]
    statuses = table.column("status").to_pylist()
    return [str(k) for k, s in zip(keys, statuses, strict=True) if s == "success"]
