"""Ctrl-C during a run: one line saying what is kept and how to resume, and exit status 130.

Whatever a process was doing when interrupted, what its shards' completion
records vouch for stays (``state/record.py``), and a rerun of the same command
takes the job up from there; what it had not committed is embedded again.
So the line counts what the records hold, not what this process did:
``interrupted: 3 shards committed, 1,024 rows kept; rerun the same command
to resume``. ``logging=debug`` lets the traceback through instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("img_search")

#: The exit status of a process stopped by SIGINT, as shells report it (128 + 2).
INTERRUPTED = 130


@contextlib.contextmanager
def interrupted_exit(cfg: Any) -> Iterator[None]:
    """Turn a ``KeyboardInterrupt`` inside into the one line (main process only) and exit 130."""
    debug = str((cfg.get("logging") or {}).get("level", "INFO")).upper() == "DEBUG"
    try:
        yield
    except KeyboardInterrupt:
        if debug:
            raise
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while the line is written
        if os.environ.get("RANK", "0") == "0":
            log.warning("%s", interrupted_line(cfg))
        sys.exit(INTERRUPTED)


def interrupted_line(cfg: Any) -> str:
    """What the job state at ``cfg.output_path`` keeps, and how to go on."""
    from img_search.pipeline.job_progress import committed
    from img_search.store.layout import TableLayout

    resume = "rerun the same command to resume"
    try:
        path = cfg.get("output_path")
    except Exception:  # omegaconf's missing value (???): the run stopped before it began
        path = None
    if not path:
        return "interrupted before anything was embedded; rerun the same command to start"
    layout = TableLayout.of(str(path))
    shards, rows = committed(layout.state_dir)
    if shards or rows:
        plural = "" if shards == 1 else "s"
        return f"interrupted: {shards:,} shard{plural} committed, {rows:,} rows kept; {resume}"
    if layout.finished():
        return f"interrupted: {layout.path} is complete"
    start = resume.replace("resume", "start")
    return f"interrupted before any shard was committed: nothing kept; {start}"
