"""This machine as the run machinery and the server see it: its name and the cores this process may use.

Its own module because the bottom layer (atomic writes name their writer's
host) and the layers above (loader workers, Ray actors, the server's decode
slots) all ask the same two questions.
"""

from __future__ import annotations

import os
import socket

HOST = socket.gethostname()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, e.g. under Slurm)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
