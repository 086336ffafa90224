"""Opening a tar and walking its headers with bounds: no header, however crafted, costs more than a MiB.

``tarfile`` believes what a header says. A PAX header may say it is 1.4 GB
long (``tarfile`` reads it into one bytes object), a global PAX header may
hold 20,000 keywords (``tarfile`` copies them into every member after it),
extended headers may chain without end (one Python frame each), and a GNU
sparse map may go on for the rest of the file. ``BoundedTarFile`` reads a
tar with ``tarfile``'s parsers and these bounds:

- an extended header (PAX, GNU long name or link) over ``MAX_HEADER_BYTES``
  is skipped unread; the member it describes is marked ``refused`` (its
  sample becomes an error row) and the walk goes on after it;
- a global PAX header set over ``MAX_PAX_KEYWORDS`` keywords is dropped,
  with a note (a global header carries defaults, never a member's data);
- more than ``MAX_CHAIN`` extended headers in a row, or a sparse map over
  ``MAX_SPARSE_ENTRIES`` entries, end the walk there (``HeaderRefused``).

A compressed tar (gzip, bzip2, xz, told by its first bytes) is read as a
stream: seeking forward decompresses and drops, a MiB at a time.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zlib
from typing import IO, Any

from img_search.data.limits import in_words

#: An extended header (a PAX record set, a GNU long name): real ones are under a kB.
MAX_HEADER_BYTES = 2**20
#: Keywords the global PAX headers of a tar may set together (real tars set a handful).
MAX_PAX_KEYWORDS = 1000
#: Extended headers in a row before a member (real tars: one or two).
MAX_CHAIN = 8
#: Entries of one member's sparse map (each holds one run of data between holes).
MAX_SPARSE_ENTRIES = 100_000
#: Bytes decompressed and dropped per read when seeking forward in a compressed tar.
SKIP_CHUNK = 2**20

EXTENDED = {
    tarfile.XHDTYPE: "a PAX extended header",
    tarfile.SOLARIS_XHDTYPE: "a PAX extended header",
    tarfile.XGLTYPE: "a global PAX header",
    tarfile.GNUTYPE_LONGNAME: "a GNU long name",
    tarfile.GNUTYPE_LONGLINK: "a GNU long link name",
}
DECOMPRESSORS: list[tuple[bytes, Any]] = [
    (b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
]


class HeaderRefused(tarfile.TarError):
    """Headers that cannot be read within the bounds: the walk of the tar ends here."""


class BoundedTarInfo(tarfile.TarInfo):
    """``tarfile``'s member, parsed within the module's bounds."""

    #: Why this member's headers were not all read (its sample is an error row); None: they were.
    refused: str | None = None
    #: crc32 of the 512 bytes just before the member's data: checked again when they are read.
    check: int = 0

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> Any:
        member = super().frombuf(buf, encoding, errors)
        member.check = zlib.crc32(buf)
        return member

    def _proc_member(self, archive: Any) -> Any:
        if self.type not in EXTENDED:
            return super()._proc_member(archive)
        archive.chain += 1
        try:
            if archive.chain > MAX_CHAIN:
                raise HeaderRefused(
                    f"more than {MAX_CHAIN} extended headers in a row at byte {self.offset}"
                )
            if self.size > MAX_HEADER_BYTES:
                return self._skip(archive)
            member = super()._proc_member(archive)
        finally:
            archive.chain -= 1
        if self.type == tarfile.XGLTYPE and len(archive.pax_headers) > MAX_PAX_KEYWORDS:
            archive.note(
                f"its global PAX headers set {len(archive.pax_headers)} keywords, over the "
                f"{MAX_PAX_KEYWORDS} read: ignored from byte {self.offset} on"
            )
            archive.pax_headers.clear()
            member.pax_headers = {}
        return member

    def _skip(self, archive: Any) -> Any:
        """Skip an extended header over the bound unread, and mark the member it describes."""
        what = f"{EXTENDED[self.type]} of {in_words(self.size)} at byte {self.offset}"
        archive.fileobj.seek(self._block(self.size), io.SEEK_CUR)
        try:
            member = self.fromtarfile(archive)
        except (tarfile.HeaderError, tarfile.ReadError) as exc:
            raise HeaderRefused(f"{what}, and no member header after it ({exc})") from None
        member.offset = self.offset
        if self.type == tarfile.XGLTYPE:
            archive.note(f"{what}, over the {in_words(MAX_HEADER_BYTES)} read: ignored")
        else:
            member.refused = (
                f"{what}, over the {in_words(MAX_HEADER_BYTES)} a header may take: "
                "this member's headers were not read"
            )
        return member

    def _proc_sparse(self, archive: Any) -> Any:
        """``tarfile``'s GNU sparse header, with the extension blocks bounded and checked."""
        structs, extended, realsize = self._sparse_structs
        del self._sparse_structs
        while extended:
            block = archive.fileobj.read(tarfile.BLOCKSIZE)
            if len(block) < tarfile.BLOCKSIZE:
                raise tarfile.ReadError(f"the sparse map of {self.name} is cut short")
            for start in range(0, 21 * 24, 24):
                try:
                    offset = tarfile.nti(block[start : start + 12])
                    length = tarfile.nti(block[start + 12 : start + 24])
                except ValueError:
                    break
                if offset and length:
                    structs.append((offset, length))
            if len(structs) > MAX_SPARSE_ENTRIES:
                raise HeaderRefused(
                    f"{self.name}: a sparse map of over {MAX_SPARSE_ENTRIES} entries"
                )
            extended = bool(block[504])
            self.check = zlib.crc32(block)  # the block before the data is the map's last one
        self.sparse = structs
        self.offset_data = archive.fileobj.tell()
        archive.offset = self.offset_data + self._block(self.size)
        self.size = realsize
        return self

    def _proc_gnusparse_10(self, next: Any, pax_headers: Any, archive: Any) -> None:
        """GNU sparse 1.0 (``--format=pax``): the map opens the data; its length is bounded."""
        numbers: list[int] = []
        buffer = block = archive.fileobj.read(tarfile.BLOCKSIZE)
        fields = None
        while fields is None or len(numbers) < 2 * fields:
            if b"\n" not in buffer:
                block = archive.fileobj.read(tarfile.BLOCKSIZE)
                if not block:
                    raise tarfile.ReadError(f"the sparse map of {next.name} is cut short")
                buffer += block
                continue
            line, buffer = buffer.split(b"\n", 1)
            if fields is None:
                fields = int(line)
                if not 0 <= fields <= MAX_SPARSE_ENTRIES:
                    raise HeaderRefused(f"{next.name}: a sparse map of {fields} entries")
            else:
                numbers.append(int(line))
        next.offset_data = archive.fileobj.tell()
        next.check = zlib.crc32(block)
        next.sparse = list(zip(numbers[::2], numbers[1::2], strict=True))


class BoundedTarFile(tarfile.TarFile):
    """A tar opened for reading with ``BoundedTarInfo``; ``notes``: what was ignored, for the log."""

    tarinfo = BoundedTarInfo

    def __init__(self, fileobj: IO[bytes]) -> None:
        self.chain = 0
        self.notes: list[str] = []
        super().__init__(fileobj=fileobj, mode="r")

    def note(self, text: str) -> None:
        self.notes.append(text)


def decompressed(raw: IO[bytes]) -> IO[bytes]:
    """``raw`` itself, or its decompressed stream when its first bytes say gzip, bzip2 or xz."""
    head = raw.read(6)
    raw.seek(0)
    for magic, opener in DECOMPRESSORS:
        if head.startswith(magic):
            return ForwardSkips(opener(raw))
    return raw


class ForwardSkips(io.RawIOBase):
    """A decompressed stream whose forward seeks read and drop a MiB at a time (not 8 kB)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self.stream = stream

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self.stream.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        here = self.stream.tell()
        target = here + offset if whence == io.SEEK_CUR else offset
        if whence == io.SEEK_END or target < here:
            return self.stream.seek(offset, whence)
        while here < target and (data := self.stream.read(min(SKIP_CHUNK, target - here))):
            here += len(data)
        return here

    def close(self) -> None:
        self.stream.close()
        super().close()
