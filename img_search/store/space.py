"""What a write that the output's filesystem refused means to the user, in one line.

A full disk, a quota or a folder turned read-only mid-run is not a bug to
show as a traceback: the user needs the path, the space left, and the fact
that committed shards are kept and a rerun resumes.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

#: errno values of a filesystem that takes no more writes (rather than a fault of ours).
REFUSALS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class OutputUnwritable(ValueError):
    """The output's filesystem refused a write: where, the space left, and what next.

    A ``ValueError``, like every error a user can act on, so each command
    line tool reports it as one line with exit code 2.
    """


def explain_refused_write(exc: BaseException, output: Path) -> OutputUnwritable | None:
    """``exc`` in words if it is the filesystem refusing a write under ``output``; else None."""
    if not isinstance(exc, OSError) or exc.errno not in REFUSALS:
        return None
    where = Path(exc.filename) if exc.filename else output
    state = output.with_name(output.name + ".partial")
    if not any(where == top or top in where.parents for top in (output, state)):
        return None  # a read, or a write elsewhere: not the output's filesystem refusing
    reason = os.strerror(exc.errno)
    return OutputUnwritable(
        f"cannot write {where}: {reason} ({free_space(where)} free there); the shards committed "
        "so far are kept: make room (or make the folder writable) and rerun the same command "
        "to resume",
    )


def free_space(path: Path) -> str:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "unknown space"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    raise AssertionError("unreachable")
