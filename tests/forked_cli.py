"""A command-line run in a forked child of the test process: ``python -m`` without the imports again.

Most of a CLI run's CPU on this machine is importing torch, Arrow and pandas
(about 4 of its 5.5 CPU-seconds), and the suite starts the CLIs well over a
hundred times. The child is still a process of its own, with its own
arguments, working folder, environment, file descriptors and exit status,
and it runs the module exactly as ``python -m`` does (``runpy``); it just
inherits what the test process already imported. Runs that change what is
read at import time (``HF_*``, thread counts), that go through a launcher,
or all of them with ``IMG_SEARCH_TEST_FRESH=1``, start a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

#: Environment variables a run may set and still be forked: read when used, not when imported.
READ_AT_RUN_TIME = {
    "IMG_SEARCH_FAULT",
    "PYTHONUNBUFFERED",
    "COLUMNS",
    *("SLURM_JOB_ID", "SLURM_JOB_DEPENDENCY"),  # pipeline/engines/slurm.py
}


def can_fork(launcher: list[str] | None, env: dict[str, str] | None) -> bool:
    if launcher or os.environ.get("IMG_SEARCH_TEST_FRESH") == "1" or not hasattr(os, "fork"):
        return False
    return set(env or {}) <= READ_AT_RUN_TIME


def run_forked(
    module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Like ``subprocess.run([python, -m, module, *args], capture_output=True, text=True)``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:  # the child never returns
            _child(module, args, cwd, env, out.fileno(), err.fileno())
        code = _wait(pid, timeout, [sys.executable, "-m", module, *args])
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            [sys.executable, "-m", module, *args],
            code,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )


def _child(
    module: str, args: list[str], cwd: Path, env: dict[str, str], out: int, err: int
) -> None:
    code = 1
    try:
        os.setpgid(0, 0)  # a timeout kills the child's loader workers with it
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
        logging.getLogger().handlers.clear()  # the test process's capture handlers
        os.chdir(cwd)
        os.environ.update(env)
        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        # what interpreter shutdown does for the run (a thread left running hangs it here too);
        # not the test process's atexit handlers, which the child inherited
        with contextlib.suppress(Exception):
            threading._shutdown()  # type: ignore[attr-defined]
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _wait(pid: int, timeout: float, command: list[str]) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise subprocess.TimeoutExpired(command, timeout)
        time.sleep(0.02)
