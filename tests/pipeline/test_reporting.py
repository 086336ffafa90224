"""The end-of-run summary: whole on an 80-column terminal, silent under logging=quiet, and
error counts that agree with the errors file."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from img_search import console as console_module
from img_search.pipeline import reporting
from img_search.pipeline.reporting import ProcessReport, RunStats, print_summary
from img_search.testing.fixtures import write_photo_folder

SIMULATED = ["models=simulated", "models.simulated.batch_seconds=0"]
ANOTHER_MODEL = ["+models.other.model=simulated", "+models.other.batch_seconds=0"]


def stats(model: str, rank: int, rows: int) -> RunStats:
    run = RunStats(
        model, "image_folder", rank=rank, rows=rows, errors=1, shards=[rank], seconds=2.0
    )
    run.stages.update({"wait": 0.5, "forward": 1.25, "write": 0.25})
    return run


def reports() -> list[ProcessReport]:
    """A Ray run: the driver, and two workers that embedded two models."""
    driver = ProcessReport(0, "gpu-node-01-4242-a1b2c3", role="ray driver")
    workers = [
        ProcessReport(
            i,
            f"gpu-node-0{i + 2}-{i}-d4e5f6",
            [stats("efficientnet_lite0", i, 30), stats("siglip2", i, 31)],
            collectives=7,
            role=f"ray worker {i + 1} of 2",
        )
        for i in range(2)
    ]
    return [driver, *workers]


def outcome(errors_path: Path | None, new: int, held: int | None) -> SimpleNamespace:
    return SimpleNamespace(
        finished=True,
        rows=122,
        new_errors=new,
        errors=held,
        errors_path=errors_path,
        waiting="",
        processes=[],
    )


def summary(monkeypatch, capsys, width: int, quiet: bool = False) -> tuple[str, str]:
    """What ``print_summary`` writes to a console of ``width`` columns, and to stdout."""
    file = io.StringIO()
    monkeypatch.setattr(
        reporting, "console", Console(file=file, width=width, **console_module.PLAIN)
    )
    monkeypatch.setattr(console_module.OUTPUT, "quiet", quiet)
    print_summary(reports(), outcome(Path("/out/t.errors.parquet"), 4, 4), "/out/t.parquet")
    return file.getvalue(), capsys.readouterr().out


def test_an_80_column_terminal_shows_every_name_and_number_whole(monkeypatch, capsys) -> None:
    text, out = summary(monkeypatch, capsys, 80)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in text
    # the counts, then the seconds: two tables, each row whole on one line
    assert "seconds (the slowest process)" in text
    rows = [line for line in lines if line.startswith("│ efficientnet_lite0 │")]
    assert [r.split("│")[3:-1] for r in rows] == [
        ["   60 ", "       0 ", "      2 ", "      2 "],  # rows, resumed, errors, shards
        [" 2.0 ", "    31.0 ", "  0.5 ", "     1.2 ", "   0.2 "],  # s, items/s, stages
    ]
    # each process by its role: the Ray driver is named so, not "rank 0"
    processes = text.split("per process")[1]
    for role in ("ray driver", "ray worker 1 of 2", "ray worker 2 of 2"):
        assert f"│ {role} " in processes
    assert "rank 0" not in processes and "gpu-node-02-0-d4e5f6" in processes
    assert out == "output: /out/t.parquet\nrows: 122\nerrors: 4 (see /out/t.errors.parquet)\n"


def test_a_wide_log_keeps_one_table_and_quiet_prints_only_the_output(monkeypatch, capsys) -> None:
    text, _ = summary(monkeypatch, capsys, 140)
    assert "seconds (the slowest process)" not in text
    header = next(line for line in text.splitlines() if "┃ model" in line)
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        *("model", "dataset", "rows", "resumed", "errors", "shards", "s", "items/s"),
        *("wait s", "forward s", "write s"),
    ]
    text, out = summary(monkeypatch, capsys, 140, quiet=True)
    assert text == ""
    assert out == "output: /out/t.parquet\nerrors: 4 (see /out/t.errors.parquet)\n"


@pytest.mark.parametrize(
    ("errors_path", "new", "held", "line"),
    [
        ("e.parquet", 1, 2, "errors: 2 in the table, 1 new in this run (see e.parquet)"),
        ("e.parquet", 0, 2, "errors: 2 in the table, 0 new in this run (see e.parquet)"),
        ("e.parquet", 3, 3, "errors: 3 (see e.parquet)"),
        (None, 0, 0, None),
    ],
)
def test_error_lines_say_which_count_is_which(errors_path, new, held, line) -> None:
    assert reporting.error_lines(outcome(errors_path, new, held), new) == ([line] if line else [])


def test_after_an_appended_model_the_errors_line_counts_the_errors_file(
    tmp_path, run_embed
) -> None:
    """One broken image, two models: the second run adds one error to the first one's."""
    folder = tmp_path / "photos"
    write_photo_folder(folder, 6)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "photos.parquet"
    source = ["datasets=image_folder", f"datasets.image_folder.path={folder}", f"output_path={out}"]
    first = run_embed(*SIMULATED, *source)
    errors = tmp_path / "photos.errors.parquet"
    assert f"errors: 1 (see {errors})" in first.stdout
    added = run_embed(*SIMULATED, *ANOTHER_MODEL, *source)
    assert pq.read_table(errors).num_rows == 2
    assert f"errors: 2 in the table, 1 new in this run (see {errors})" in added.stdout
    assert "rows: 12" in added.stdout


def test_logging_quiet_prints_the_output_path_and_nothing_else(tmp_path, run_embed) -> None:
    folder = tmp_path / "photos"
    write_photo_folder(folder, 6)
    out = tmp_path / "photos.parquet"
    args = [*SIMULATED, "datasets=image_folder", f"datasets.image_folder.path={folder}"]
    quiet = run_embed(*args, f"output_path={out}", "logging=quiet", "logging.progress_every_s=1e-9")
    assert (quiet.stdout, quiet.stderr) == (f"output: {out}\n", "")
    again = run_embed(*args, f"output_path={out}", "logging=quiet")  # already complete
    assert (again.stdout, again.stderr) == (f"output: {out}\n", "")
    bad = run_embed(*args, f"output_path={out}", "logging.progress_every_s=0", expect_ok=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith(
        "logging.progress_every_s must be a positive number of seconds, got 0"
    )
