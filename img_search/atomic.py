"""Files that appear whole or not at all, also on a filesystem shared by several machines.

Everything is written under a temporary name that carries the host, the
pid and a token drawn by each process (two processes never share one, even
with one host name and one pid in two PID namespaces, and a leftover names
its writer), then renamed into place. ``create_exclusive`` adds the one primitive the job's
coordination needs: a file created by exactly one of several racing
processes, with its content already complete when others can see it (a hard
link is atomic and exclusive on local disks, NFS and Lustre alike).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from img_search.host import HOST

_token: tuple[int, str] = (0, "")


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """``.<name>.tmp-<host>-<pid>-<token>`` next to ``path``: hidden from globs and readers,
    unique per writer."""
    global _token
    if _token[0] != os.getpid():  # drawn again in a forked child
        _token = (os.getpid(), uuid.uuid4().hex[:8])
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{HOST}-{_token[0]}-{_token[1]}")


def is_temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def fsync_file(path: str | os.PathLike[str]) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` fills a temporary file or folder, which then replaces ``path`` in one rename."""
    path = Path(path)
    tmp = temporary_name(path)
    remove(tmp)
    try:
        write(tmp)
        if tmp.is_file():
            fsync_file(tmp)
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)  # a folder cannot be replaced by rename while it holds files
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def create_exclusive(path: str | os.PathLike[str], text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; True for the one caller that created it."""
    path = Path(path)
    tmp = temporary_name(path)
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def remove(path: str | os.PathLike[str]) -> None:
    """Delete a file or a folder tree if it is there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
