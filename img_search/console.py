"""What every tool prints: log lines (rich on a terminal, one plain line otherwise) and progress:
bars on a terminal (or in a notebook), plain lines every ``logging.progress_every_s`` elsewhere.

Shared by the pipelines, search, evaluation and the Python API; imports only rich.
Off a terminal nothing here writes an ANSI code: the log handler is a plain
one, progress is plain lines (``progress_lines``), and rich's console gives a
file no colour.

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
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from img_search.progress_lines import ProgressLines

#: Console settings that print user text as it is.
PLAIN: dict[str, Any] = {"markup": False, "emoji": False}

console = Console(stderr=True, width=None if sys.stderr.isatty() else 140, **PLAIN)

#: Seconds between two progress lines off a terminal (``logging.progress_every_s``).
DEFAULT_PROGRESS_EVERY_S = 30.0


class _Output:
    """What ``configure_output`` decided for this process: how often progress lines come, and
    whether only warnings and errors are shown (``logging=quiet``: no progress, no summary)."""

    progress_every_s: float = DEFAULT_PROGRESS_EVERY_S
    quiet: bool = False


OUTPUT = _Output()


def interactive() -> bool:
    """Progress redraws in place here: stderr is a terminal, or this is a notebook."""
    return sys.stderr.isatty() or console.is_jupyter


def chatty() -> bool:
    """Progress and summaries are shown (not ``logging=quiet``, and not silenced like a Ray actor's)."""
    return not OUTPUT.quiet and not console.quiet


def stdout_console(width: int | None = 160) -> Console:
    """A console for results on stdout (tables, the files written) that prints user text as it is."""
    return Console(width=width, **PLAIN)


def configure_output(logging_cfg: Any) -> None:
    """What a ``logging`` config node says about output beyond the log handlers: progress lines
    every ``progress_every_s`` off a terminal, and nothing but warnings, errors and the output
    path above ``INFO`` (``logging=quiet``). A bad ``progress_every_s`` is a user error."""
    node = logging_cfg or {}
    number = logging.getLevelName(str(node.get("level", "INFO")).upper())
    seconds = node.get("progress_every_s", DEFAULT_PROGRESS_EVERY_S)
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        raise ValueError(
            f"logging.progress_every_s must be a positive number of seconds, got {seconds!r}"
        )
    OUTPUT.progress_every_s = value
    OUTPUT.quiet = isinstance(number, int) and number > logging.INFO


def setup_logging(level: str = "INFO", is_main: bool = True, rich_tracebacks: bool = False) -> None:
    """Rich log lines on the main process; other ranks only warn, to keep the terminal readable.

    Off a terminal (a file, a Slurm log, a pipe) every message is one plain
    line, never wrapped: what a user greps for stays on one line, and no bar
    of the Hub libraries draws itself there.
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
        # per-split and per-checkpoint bars flood logs (a terminal keeps them); read when 🤗
        # datasets and huggingface_hub (transformers' "Loading weights") are imported
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    for noisy in ("httpx", "urllib3", "filelock", "fsspec", "datasets", "huggingface_hub", "faiss"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class FieldColumn(ProgressColumn):
    """A task's optional text field (``detail=``), empty where the task has none: on one line,
    and what a narrow terminal cuts short first (every other column keeps its width)."""

    def __init__(self, name: str) -> None:
        super().__init__(table_column=Column(overflow="ellipsis"))
        self.name = name

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get(self.name) or ""), no_wrap=True, overflow="ellipsis")


def make_progress(enabled: bool) -> Progress | ProgressLines:
    """On a terminal, bars with done/total, a rate column (``rate=`` field), elapsed and remaining
    time, and an optional ``detail=`` field, on stderr; elsewhere the same as plain lines every
    ``logging.progress_every_s`` (``ProgressLines``). Neither under ``logging=quiet``."""
    enabled = enabled and chatty()
    if not interactive():
        return ProgressLines(every_s=OUTPUT.progress_every_s, disable=not enabled)

    def whole() -> Column:
        return Column(no_wrap=True)

    return Progress(  # a description names user things (models, datasets, runs): never markup
        TextColumn("{task.description}", style="bold", markup=False, table_column=whole()),
        BarColumn(bar_width=20, table_column=whole()),
        MofNCompleteColumn(table_column=whole()),
        TextColumn("{task.fields[rate]}", markup=False, table_column=whole()),
        TimeElapsedColumn(table_column=whole()),
        TimeRemainingColumn(table_column=whole()),
        FieldColumn("detail"),
        console=console,
        disable=not enabled,
        transient=False,
    )
