"""``python -m img_search.serve`` in a child process, as a user starts it (shared by the tests here)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import OFFLINE, REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_process(
    *overrides: str, address_space: int | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """(URL, process) of a server started with ``overrides``, once it accepts connections.

    ``address_space``: its RLIMIT_AS, set by a small fresh interpreter that then becomes the
    server (``os.execv``), never in a fork of the test process, which can hold more than the limit.
    """
    import pytest

    port = free_port()
    args = [*overrides, f"port={port}"]
    command = [sys.executable, "-m", "img_search.serve", *args]
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"}
    if address_space is not None:
        command = [
            sys.executable,
            "-c",
            "import os, resource, sys; "
            f"resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space})); "
            "os.execv(sys.executable, [sys.executable, '-m', 'img_search.serve', *sys.argv[1:]])",
            *args,
        ]
        env["MALLOC_ARENA_MAX"] = "2"  # as the limited pipeline runs: threads share arenas
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if url in line:
                break
            if process.poll() is not None:
                pytest.fail(
                    f"the server exited with {process.returncode}:\n{process.stdout.read()}"
                )
        else:
            pytest.fail("the server did not print its URL within 120 s")
        for _ in range(100):  # the URL is printed just before uvicorn binds
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
