"""Progress off a terminal: plain lines at the start, every ``every_s``, and once at the end."""

from __future__ import annotations

import logging

import pytest

import img_search.progress_lines as progress_lines
from img_search.progress_lines import ProgressLines


class Clock:
    """A monotonic clock the test moves by hand (the module reads ``time.monotonic``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_lines, "time", fake)
    return fake


def written(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "img_search.progress"]


def test_a_line_at_the_start_one_per_period_and_the_last_state_once(clock, caplog) -> None:
    caplog.set_level(logging.INFO, logger="img_search.progress")
    with ProgressLines(every_s=30) as lines:
        task = lines.add_task("clip × inquire", total=1000, rate="")
        lines.update(task, completed=200, detail="2/10 shards committed, 0 errors")
        clock.now += 10
        lines.update(task, completed=300, rate="10.0 items/s")  # before the period: no line
        clock.now += 20
        lines.update(task, completed=500, rate="10.0 items/s")
        clock.now += 50
        lines.update(
            task, completed=1000, rate="10.0 items/s", detail="10/10 shards committed, 1 errors"
        )
        lines.update(task, completed=1000, rate="9.0 items/s")  # done already said: not again
    assert written(caplog) == [
        "clip × inquire: 200/1,000 (20%); 2/10 shards committed, 0 errors",
        # 300 items in 30 s since the first update (the 200 done before it are not in the rate)
        "clip × inquire: 500/1,000 (50%), 10.0 items/s, 0:00:50 left; "
        "2/10 shards committed, 0 errors",
        "clip × inquire: 1,000/1,000 (100%), 10.0 items/s; 10/10 shards committed, 1 errors",
    ]


def test_stop_writes_where_each_task_stands_and_disabled_writes_nothing(clock, caplog) -> None:
    caplog.set_level(logging.INFO, logger="img_search.progress")
    with ProgressLines(every_s=30) as lines:
        known = lines.add_task("report", total=4, rate="")
        unknown = lines.add_task("exact top-10", total=None, rate="")
        untouched = lines.add_task("never updated", total=3, rate="")
        lines.update(known, advance=1)
        lines.update(unknown, completed=7, rate="7 rows/s")
        clock.now += 5
        lines.update(known, advance=2, description="report: siglip2 × retrieval")
        lines.update(unknown, completed=70)
        assert lines.tasks[known].elapsed == 5
        assert lines.tasks[untouched].completed == 0
    assert written(caplog) == [
        "report: 1/4 (25%)",
        "exact top-10: 7, 7 rows/s",
        "report: siglip2 × retrieval: 3/4 (75%), 0:00:02 left",
        "exact top-10: 70, 7 rows/s",
    ]
    caplog.clear()
    with ProgressLines(every_s=0, disable=True) as quiet:
        quiet.update(quiet.add_task("x", total=2), completed=2)
    assert written(caplog) == []
