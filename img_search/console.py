"""What every tool prints: log lines (rich on a terminal, one plain line otherwise) and progress bars.

Shared by the pipelines, search, evaluation and the Python API; imports only rich.

What we print holds user text (query texts, captions, run and table names,
fields of a user's CSV), so no console here reads rich markup or emoji codes:
``[/x]`` or ``:smile:`` in a query is printed as typed, never parsed (a
closing tag without its opening one is an error in rich). Style goes in
``rich.text.Text(..., style=...)``, never in markup.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Console settings that print user text as it is.
PLAIN: dict[str, Any] = {"markup": False, "emoji": False}

console = Console(stderr=True, width=None if sys.stderr.isatty() else 140, **PLAIN)


def stdout_console(width: int | None = 160) -> Console:
    """A console for results on stdout (tables, the files written) that prints user text as it is."""
    return Console(width=width, **PLAIN)


def setup_logging(level: str = "INFO", is_main: bool = True, rich_tracebacks: bool = False) -> None:
    """Rich log lines on the main process; other ranks only warn, to keep the terminal readable.

    Off a terminal (a file, a Slurm log, a pipe) every message is one plain
    line, never wrapped: what a user greps for stays on one line.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(
            console=console, show_path=False, rich_tracebacks=rich_tracebacks, markup=False
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
        )
    root.addHandler(handler)
    root.setLevel(level.upper() if is_main else "WARNING")
    if not sys.stderr.isatty() and level.upper() != "DEBUG":
        # per-split bars flood logs (a terminal keeps them); read when 🤗 datasets is imported
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()
    for noisy in ("httpx", "urllib3", "filelock", "fsspec", "datasets", "huggingface_hub", "faiss"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def make_progress(enabled: bool) -> Progress:
    """Bars with done/total, a rate column (``rate=`` field), elapsed and remaining time, on stderr."""
    return Progress(  # a description names user things (models, datasets, runs): never markup
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
