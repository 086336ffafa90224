"""Which processes of a job can be proven alive or dead at once, and which only by their lease.

A pid means one process only inside one PID namespace of one boot of one
machine. Host names do not tell machines apart (two containers with
``--uts host``, two machines both called ``localhost``), and a PID namespace
(a container, ``unshare --pid``) reuses the pids of every other one. So a
process file records, beside the host and the pid, where that pid means
something (``here()``): the boot id (``/proc/sys/kernel/random/boot_id``),
the PID namespace (the inode of ``/proc/self/ns/pid``) and the process's
start time (field 22 of ``/proc/<pid>/stat``, which tells a reused pid
apart). Another process checks that pid only when it runs on the same boot
in the same namespace and its ``/proc`` shows that namespace
(``provable``); any other process — on another machine, in another
container, or recorded without these fields — is alive while its heartbeat
is fresher than its lease.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from img_search.host import HOST


def process_start_time(pid: int | str) -> str | None:
    """The start time of ``pid`` (or ``"self"``) in clock ticks since boot (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def here() -> dict[str, Any]:
    """Where this process's pid means something: recorded in its process file."""
    return dict(_here(os.getpid()))


@functools.lru_cache(maxsize=4)
def _here(pid: int) -> tuple[tuple[str, Any], ...]:
    return (("boot_id", _boot_id()), ("pid_namespace", _pid_namespace(pid)))


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _pid_namespace(pid: int) -> int | None:
    """This process's PID namespace, if ``/proc`` shows that namespace (not a parent's: a
    ``unshare --pid`` without ``--mount-proc``, a container given the host's ``/proc``)."""
    try:
        with open("/proc/self/stat", encoding="ascii", errors="replace") as handle:
            seen_as = int(handle.read().split(maxsplit=1)[0])
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except (OSError, ValueError):
        return None
    return namespace if seen_as == pid else None


def provable(member: dict[str, Any]) -> bool:
    """Whether this process can tell from ``member``'s pid alone whether it is alive."""
    if not isinstance(member.get("pid"), int):
        return False
    if not os.path.isdir("/proc"):  # no namespaces to tell apart: the host name decides
        return member.get("host") == HOST
    mine = here()
    return (
        None not in mine.values()
        and member.get("boot_id") == mine["boot_id"]
        and member.get("pid_namespace") == mine["pid_namespace"]
    )


def pid_alive(pid: int, started: str | None) -> bool:
    """``pid`` runs, and is the process that started at ``started`` (not a later one with its pid)."""
    if os.path.isdir("/proc"):
        now = process_start_time(pid)
        return now is not None and now == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
