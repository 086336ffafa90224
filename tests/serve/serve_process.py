"""``python -m img_search.serve`` in a child process, as a user starts it (shared by the tests here)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from conftest import OFFLINE, REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_process(
    *overrides: str, preexec_fn: Callable[[], None] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """(URL, process) of a server started with ``overrides``, once it accepts connections."""
    import pytest

    port = free_port()
    command = [sys.executable, "-m", "img_search.serve", *overrides, f"port={port}"]
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec_fn,
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
