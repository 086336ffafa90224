"""What the user sees: rich logging, a progress bar per (model, dataset), and the end-of-run summary."""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from dataclasses import dataclass, field
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
from rich.table import Table

console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def setup_logging(level: str = "INFO", is_main: bool = True, rich_tracebacks: bool = False) -> None:
    """Rich log lines on the main process; other ranks only warn, to keep the terminal readable."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=rich_tracebacks)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper() if is_main else "WARNING")
    if not sys.stderr.isatty() and level.upper() != "DEBUG":
        import datasets

        datasets.disable_progress_bars()  # per-split bars flood logs; a terminal keeps them
    for noisy in ("httpx", "urllib3", "filelock", "fsspec", "datasets", "huggingface_hub", "faiss"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


@dataclass
class RunStats:
    """Counts and per-stage seconds of one (model, dataset) pass, on the main process."""

    model_name: str
    dataset_name: str
    rows: int = 0
    errors: int = 0
    #: Items already written by an earlier, interrupted run.
    resumed: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def items_per_s(self) -> float:
        return (self.rows + self.errors) / self.seconds if self.seconds > 0 else 0.0


def make_progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def print_summary(
    stats: list[RunStats], output_path: Any, errors_path: Any | None, total_rows: int
) -> None:
    """Rows, errors, throughput and where time went, per (model, dataset); then the file paths."""
    table = Table(title="img_search embedding summary")
    stage_names = list(dict.fromkeys(k for s in stats for k in s.stages))
    table.add_column("model")
    table.add_column("dataset")
    for column in ("rows", "resumed", "errors", "s", "items/s", *(f"{k} s" for k in stage_names)):
        table.add_column(column, justify="right")
    for s in stats:
        table.add_row(
            s.model_name,
            s.dataset_name,
            str(s.rows),
            str(s.resumed),
            str(s.errors),
            f"{s.seconds:.1f}",
            f"{s.items_per_s:.1f}",
            *(f"{s.stages.get(k, 0.0):.1f}" for k in stage_names),
        )
    console.print(table)
    console.file.flush()
    # Plain lines on stdout, for scripts and for make demo.
    print(f"output: {output_path}")
    print(f"rows: {total_rows}")
    resumed = sum(s.resumed for s in stats)
    if resumed:
        print(f"resumed: {resumed} rows were already done by an earlier run")
    if errors_path is not None:
        print(f"errors: {sum(s.errors for s in stats)} (see {errors_path})")
    sys.stdout.flush()
