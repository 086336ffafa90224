"""Progress off a terminal: one plain log line per task every ``every_s`` seconds, and one at the end.

A rich bar redraws itself in place, which a file, a Slurm log or a pipe
cannot show: it stays silent until the end, then receives one frame. Here
the same calls (``add_task``, ``update``, ``tasks[...]``) write a plain
line instead — done/total, the caller's rate, the time left, and the
caller's ``detail`` — through the ``img_search.progress`` logger, so the
lines carry the log's timestamps and ``logging=quiet`` silences them.
Thread-safe: a poller thread may update while the main thread works.

Imports only the standard library (``console.make_progress`` chooses between
this and a rich bar).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("img_search.progress")


@dataclass
class LineTask:
    """One task's state, as much of rich's ``Task`` as the callers read."""

    description: str
    total: float | None
    completed: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    #: ``completed`` when the task was first updated: what was done before it (a resumed run) is
    #: left out of the rate, and so out of the time left.
    baseline: float | None = None
    #: The line last written for this task, and whether it was the last one (done/total reached).
    last_line: str = ""
    ended: bool = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        """``clip × inquire: 1,024/8,000 (12%), 35.2 items/s, 0:03:18 left; 4/32 shards committed``."""
        done = f"{self.completed:,.0f}"
        if self.total:
            done += f"/{self.total:,.0f} ({100 * self.completed / self.total:.0f}%)"
        parts = [done]
        rate = str(self.fields.get("rate") or "")
        if rate:
            parts.append(rate)
        left = self.time_left()
        if left is not None:
            parts.append(f"{format_seconds(left)} left")
        text = f"{self.description}: {', '.join(parts)}"
        detail = str(self.fields.get("detail") or "")
        return f"{text}; {detail}" if detail else text

    @property
    def finished(self) -> bool:
        return bool(self.total) and self.completed >= (self.total or 0)

    def time_left(self) -> float | None:
        """Seconds to go at the rate since the first update; None while that says nothing."""
        if not self.total or self.baseline is None or self.finished:
            return None
        gained, seconds = self.completed - self.baseline, self.elapsed
        return (self.total - self.completed) * seconds / gained if gained > 0 < seconds else None


def format_seconds(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ProgressLines:
    """What ``rich.progress.Progress`` offers the package's callers, written as plain log lines."""

    def __init__(self, every_s: float = 30.0, disable: bool = False) -> None:
        self.every_s = every_s
        self.disable = disable
        self.tasks: dict[int, LineTask] = {}
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        with self._lock:
            task_id = len(self.tasks)
            self.tasks[task_id] = LineTask(description, total, fields=dict(fields))
            return task_id

    def update(
        self,
        task_id: int,
        *,
        completed: float | None = None,
        advance: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        with self._lock:
            task = self.tasks[task_id]
            first = task.baseline is None
            if first:
                task.baseline = task.completed if completed is None else completed
                task.started = time.monotonic()
            if completed is not None:
                task.completed = completed
            if advance is not None:
                task.completed += advance
            if total is not None:
                task.total = total
            if description is not None:
                task.description = description
            task.fields.update(fields)
            if first or task.finished:  # where it starts (the total), and where it ends, at once
                self._write(task)
            if time.monotonic() - self._last >= self.every_s:
                self._write_all()

    def stop(self) -> None:
        """The last state of every task that changed since its last line."""
        with self._lock:
            for task in self.tasks.values():
                if task.baseline is not None:
                    self._write(task)

    def _write_all(self) -> None:
        self._last = time.monotonic()
        for task in self.tasks.values():
            if task.baseline is not None and not task.finished:
                self._write(task)

    def _write(self, task: LineTask) -> None:
        line = task.line()
        if self.disable or task.ended or line == task.last_line:
            return
        task.last_line, task.ended = line, task.finished
        log.info("%s", line)
