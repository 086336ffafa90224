"""What the user sees: rich logging, a progress bar per (model, dataset), and the end-of-run summary."""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from img_search.console import console


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


def print_summary(reports: list[ProcessReport], outcome: Any, output_path: Any) -> None:
    """Per (model, dataset) over the launch's processes, then per process; then plain lines on stdout."""
    pairs: dict[tuple[str, str], list[RunStats]] = {}
    for report in reports:
        for s in report.stats:
            pairs.setdefault((s.model_name, s.dataset_name), []).append(s)
    stage_names = list(dict.fromkeys(k for r in reports for s in r.stats for k in s.stages))
    table = Table(title="img_search embedding summary")
    table.add_column("model")
    table.add_column("dataset")
    for column in (
        "rows",
        "resumed",
        "errors",
        "shards",
        "s",
        "items/s",
        *(f"{k} s" for k in stage_names),
    ):
        table.add_column(column, justify="right")
    for (model, dataset), stats in pairs.items():
        seconds = max(s.seconds for s in stats)
        items = sum(s.rows + s.errors for s in stats)
        table.add_row(
            model,
            dataset,
            str(sum(s.rows for s in stats)),
            str(stats[0].resumed),
            str(sum(s.errors for s in stats)),
            str(sum(len(s.shards) for s in stats)),
            f"{seconds:.1f}",
            f"{items / seconds if seconds > 0 else 0.0:.1f}",
            *(f"{max(s.stages.get(k, 0.0) for s in stats):.1f}" for k in stage_names),
        )
    console.print(table)
    if len(reports) > 1:
        ranks = Table(title="per process")
        for column in ("rank", "process", "shards", "rows", "s", "items/s", "collective calls"):
            ranks.add_column(column, justify="right")
        for r in reports:
            seconds = sum(s.seconds for s in r.stats)
            items = sum(s.rows + s.errors for s in r.stats)
            ranks.add_row(
                str(r.rank),
                r.id,
                str(sum(len(s.shards) for s in r.stats)),
                str(sum(s.rows for s in r.stats)),
                f"{seconds:.1f}",
                f"{items / seconds if seconds > 0 else 0.0:.1f}",
                str(r.collectives),
            )
        console.print(ranks)
    console.file.flush()
    # Plain lines on stdout, for scripts and for make demo.
    print(f"output: {output_path}")
    if outcome.finished:
        print(f"rows: {outcome.rows}")
    else:
        print(f"not finished yet: {outcome.waiting}")
    by_task = shards_by_array_task(outcome.processes if outcome.finished else [])
    if by_task:
        print("shards by array task: " + ", ".join(f"{t}: {n}" for t, n in by_task.items()))
    resumed = sum(stats[0].resumed for stats in pairs.values())
    if resumed:
        print(f"resumed: {resumed} rows were already done by an earlier run")
    new_errors = sum(s.errors for stats in pairs.values() for s in stats)
    if outcome.finished and outcome.errors_path is not None:
        print(f"errors: {outcome.new_errors} (see {outcome.errors_path})")
    elif new_errors:
        print(f"errors: {new_errors}")
    sys.stdout.flush()


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
