"""The machine as every layer sees it: the host name writers sign with, the cores a process may use."""

from __future__ import annotations

import os
import socket

from img_search import host
from img_search.atomic import temporary_name


def test_usable_cores_follow_the_cpu_affinity(monkeypatch) -> None:
    if hasattr(os, "sched_getaffinity"):
        assert host.usable_cores() == len(os.sched_getaffinity(0))
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
        assert host.usable_cores() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert host.usable_cores() == 7


def test_temporary_names_carry_this_host() -> None:
    assert socket.gethostname() == host.HOST
    assert f".t.parquet.tmp-{host.HOST}-{os.getpid()}-" in temporary_name("/x/t.parquet").name
