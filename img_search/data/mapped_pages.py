"""Hand back the pages of memory-mapped files that opening them touched.

🤗 ``datasets`` opens its Arrow cache by memory-mapping the file and reading
the stream through to the end: one message header per record batch (100
rows for images), and the kernel maps the neighbouring pages with each
fault. For small rows that is every page of the file, so a 1,000,000-row
table puts its whole cache file (288 MiB of tiny images) into the process's
RSS before a single item is read, and a resumed job looks as if it held its
whole dataset. Those are clean pages of a read-only mapping: dropping them
from the process (``MADV_DONTNEED``) loses nothing; they stay in the page
cache and the rows a shard reads fault back in on demand.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

MADV_DONTNEED = 4  # Linux
MAPS = Path("/proc/self/maps")


def read_only_mappings(paths: set[str]) -> list[tuple[int, int]]:
    """Address ranges of this process's read-only mappings of ``paths`` (from /proc/self/maps)."""
    ranges = []
    for line in MAPS.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] not in paths or fields[1][1] != "-":
            continue  # not one of the files, or writable (its pages may hold changes)
        low, high = (int(address, 16) for address in fields[0].split("-"))
        ranges.append((low, high))
    return ranges


def release_pages(files: Iterable[str | Path]) -> int:
    """Drop this process's pages of read-only mappings of ``files``; the bytes of address space advised.

    A no-op (0) where there is no /proc/self/maps or madvise (not Linux).
    """
    paths = {str(Path(f).resolve()) for f in files}
    if not paths or not sys.platform.startswith("linux") or not MAPS.exists():
        return 0
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for low, high in read_only_mappings(paths):
        if libc.madvise(low, high - low, MADV_DONTNEED) == 0:
            released += high - low
        else:
            log.debug("madvise of %x-%x failed: errno %d", low, high, ctypes.get_errno())
    return released
