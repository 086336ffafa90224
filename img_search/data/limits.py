"""How much of one item a source reads: the size limits checked before any byte of it is read.

A collection scraped from the web holds whatever was put there: a 2.6 GB
"image", a gzip member that expands to gigabytes, a 50 MB caption. Each
limit is checked against the size a header or a file system states, before
reading, so an item over it costs nothing but its error row. The defaults
fit real data with room to spare: LAION and DataComp images are a few
hundred kB (the largest photos tens of MB), their captions a few hundred
bytes. Memory stays bounded by limit x loader workers, whatever the input.
"""

from __future__ import annotations

#: An image member of a tar (``datasets.<name>.max_member_bytes``).
DEFAULT_MAX_MEMBER_BYTES = 64 * 2**20
#: A caption member of a tar (``.txt``, ``.json``), or one line of a JSONL file.
DEFAULT_MAX_CAPTION_BYTES = 2**20
#: What one member may be at most, whatever the setting: its bytes are one Python object.
HIGHEST_LIMIT = 2**31 - 1


def checked_limit(value: object, setting: str) -> int:
    """``value`` as a byte limit, or ValueError naming ``setting``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= HIGHEST_LIMIT:
        raise ValueError(
            f"{setting} must be a whole number of bytes from 1 to {HIGHEST_LIMIT} "
            f"(2 GiB - 1), got {value!r}"
        )
    return value


def in_words(size: int, exact: bool = False) -> str:
    """``2600000000`` → ``2.4 GiB``, ``67108864`` → ``64 MiB``; ``exact``: bytes unless whole units
    (a limit as the user set it: ``400000 bytes``)."""
    value, unit = float(size), "bytes"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, name
    if unit == "bytes" or (exact and value != int(value)):
        return f"{size} bytes"
    return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"


def over_limit(what: str, size: int, limit: int, setting: str) -> str:
    """The reason of an item refused for its size, naming the setting that would let it in."""
    return (
        f"{what} of {in_words(size)} is over the size limit of {in_words(limit, exact=True)} "
        f"({setting})"
    )
