"""What the user sees at the end of a run: the summary per (model, dataset) and per process, and
the plain lines on stdout that scripts read (progress while it runs: ``job_progress.py``)."""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from img_search.console import chatty, console


@dataclass
class RunStats:
    """What one process did for one (model, dataset): counts and per-stage seconds."""

    model_name: str
    dataset_name: str
    rank: int = 0
    rows: int = 0
    errors: int = 0
    #: Rows of this pair committed before this launch started (an earlier, interrupted run).
    resumed: int = 0
    #: Shards this process finished, and its commits (progress commits included).
    shards: list[int] = field(default_factory=list)
    commits: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def items_per_s(self) -> float:
        return (self.rows + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "dataset": self.dataset_name,
            "rows": self.rows,
            "errors": self.errors,
            "shards": self.shards,
            "commits": self.commits,
            "seconds": round(self.seconds, 3),
            "items_per_s": round(self.items_per_s, 2),
            "stages": {k: round(v, 3) for k, v in self.stages.items()},
        }


@dataclass
class ProcessReport:
    """One process of a launch: its passes and the collective calls it made."""

    rank: int
    id: str
    stats: list[RunStats] = field(default_factory=list)
    collectives: int = 0
    collective_bytes: int = 0
    #: What it was to the job where not a rank of a launch: ``ray driver``, ``ray worker 1 of 2``.
    role: str = ""


def print_summary(reports: list[ProcessReport], outcome: Any, output_path: Any) -> None:
    """Per (model, dataset) over the launch's processes, then per process (not under
    ``logging=quiet``); then plain lines on stdout, for scripts and ``make demo``."""
    pairs: dict[tuple[str, str], list[RunStats]] = {}
    for report in reports:
        for s in report.stats:
            pairs.setdefault((s.model_name, s.dataset_name), []).append(s)
    if chatty():
        stages = list(dict.fromkeys(k for st in pairs.values() for s in st for k in s.stages))
        for table in pair_tables(pairs, stages):
            console.print(table)
        if len(reports) > 1:
            console.print(process_table(reports))
        console.file.flush()
    lines = [f"output: {output_path}"]
    if outcome.finished:
        lines.append(f"rows: {outcome.rows}")
    else:
        lines.append(f"not finished yet: {outcome.waiting}")
    by_task = shards_by_array_task(outcome.processes if outcome.finished else [])
    if by_task:
        lines.append("shards by array task: " + ", ".join(f"{t}: {n}" for t, n in by_task.items()))
    resumed = sum(stats[0].resumed for stats in pairs.values())
    if resumed:
        lines.append(f"resumed: {resumed} rows were already done by an earlier run")
    lines += error_lines(outcome, sum(s.errors for stats in pairs.values() for s in stats))
    print_result_lines(lines)


def error_lines(outcome: Any, new_errors: int) -> list[str]:
    """``errors: N``, N being what the errors file holds; this run's share where it differs (an
    appended model or dataset adds its errors to the earlier ones)."""
    if outcome.finished and outcome.errors_path is not None:
        held = outcome.errors if outcome.errors is not None else outcome.new_errors
        if held == outcome.new_errors:
            return [f"errors: {held} (see {outcome.errors_path})"]
        return [
            f"errors: {held} in the table, {outcome.new_errors} new in this run (see {outcome.errors_path})"
        ]
    if new_errors:
        return [f"errors: {new_errors} in this run (the errors file comes with the finished table)"]
    return []


def print_result_lines(lines: list[str]) -> None:
    """Plain lines on stdout; under ``logging=quiet`` only the output path and the errors."""
    for line in lines:
        if chatty() or line.startswith(("output: ", "errors: ")):
            print(line)
    sys.stdout.flush()


def pair_tables(pairs: dict[tuple[str, str], list[RunStats]], stages: list[str]) -> list[Table]:
    """One table where it fits the console; else two (the counts, then the seconds, whose title
    says they are seconds), so that an 80-column terminal shows every name and number whole."""
    counts = ("rows", "resumed", "errors", "shards")
    rows = {pair: pair_row(stats, stages) for pair, stats in pairs.items()}
    title = "img_search embedding summary"
    whole = named_table(title, (*counts, "s", "items/s", *(f"{k} s" for k in stages)), rows)
    wide = console.options.update_width(10_000)
    if console.measure(whole, options=wide).maximum <= console.width:
        return [whole]
    n = len(counts)
    return [
        named_table(title, counts, {p: r[:n] for p, r in rows.items()}),
        named_table(
            "seconds (the slowest process)",
            ("s", "items/s", *stages),
            {p: r[n:] for p, r in rows.items()},
        ),
    ]


def pair_row(stats: list[RunStats], stages: list[str]) -> list[str]:
    seconds = max(s.seconds for s in stats)
    items = sum(s.rows + s.errors for s in stats)
    return [
        str(sum(s.rows for s in stats)),
        str(stats[0].resumed),
        str(sum(s.errors for s in stats)),
        str(sum(len(s.shards) for s in stats)),
        f"{seconds:.1f}",
        f"{items / seconds if seconds > 0 else 0.0:.1f}",
        *(f"{max(s.stages.get(k, 0.0) for s in stats):.1f}" for k in stages),
    ]


def named_table(
    title: str, columns: tuple[str, ...], rows: dict[tuple[str, str], list[str]]
) -> Table:
    """Model and dataset, then ``columns``; a long name folds onto a second line, never cut."""
    table = Table(title=title)
    table.add_column("model", overflow="fold")
    table.add_column("dataset", overflow="fold")
    for column in columns:
        table.add_column(column, justify="right")
    for (model, dataset), values in rows.items():
        table.add_row(model, dataset, *values)
    return table


def process_table(reports: list[ProcessReport]) -> Table:
    """Each process: what it was (a rank, the Ray driver, a Ray worker) and its id, its shards and rows."""
    table = Table(title="per process")
    table.add_column("process", overflow="fold")
    for column in ("shards", "rows", "s", "items/s", "collective calls"):
        table.add_column(column, justify="right")
    for r in reports:
        seconds = sum(s.seconds for s in r.stats)
        items = sum(s.rows + s.errors for s in r.stats)
        table.add_row(
            f"{r.role or f'rank {r.rank}'}\n{r.id}",
            str(sum(len(s.shards) for s in r.stats)),
            str(sum(s.rows for s in r.stats)),
            f"{seconds:.1f}",
            f"{items / seconds if seconds > 0 else 0.0:.1f}",
            str(r.collectives),
        )
    return table


def shards_by_array_task(processes: list[dict[str, Any]]) -> dict[str, int]:
    """Shards committed per Slurm array task (``<array job>_<task>``), from the table's processes.

    Empty when no process ran in an array; processes outside one (a rerun
    started by hand, the ``--dependency`` job) count as ``no array``.
    """
    counts: dict[str, int] = {}
    for process in processes:
        task = process.get("array_task")
        name = "no array" if task is None else f"{process.get('array_job')}_{task}"
        shards = sum(len(done) for done in (process.get("shards") or {}).values())
        counts[name] = counts.get(name, 0) + shards
    if set(counts) <= {"no array"}:
        return {}
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] == "no array", len(kv[0]), kv[0])))
