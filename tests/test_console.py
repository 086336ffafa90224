"""``img-search``: one console command whose subcommands are the ``python -m`` tools, unchanged."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import OFFLINE, REPO, SAMPLE_PHOTOS, run_module, venv_bin

from img_search.cli import COMMANDS, available


def img_search(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv_bin("img-search"), *args],
        cwd=REPO,
        env={**os.environ, **OFFLINE, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_version_and_an_unknown_command() -> None:
    listing = img_search("--help")
    assert listing.returncode == 0
    for name, command in available().items():
        assert f"  {name}" in listing.stdout and command.summary in listing.stdout
    assert set(available()) == set(COMMANDS)
    version = img_search("--version")
    assert version.returncode == 0 and version.stdout.strip().startswith("img-search 0.")
    wrong = img_search("embd", "models=clip")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.strip().splitlines() == [
        "img-search: unknown command 'embd'; the commands are: "
        + ", ".join(available())
        + "; did you mean embed?"
    ]
    assert img_search().returncode == 2  # no command: the listing, and a usage error


def test_subcommands_forward_every_override(tiny_checkpoints, tmp_path) -> None:
    table = tmp_path / "photos.parquet"
    embed = img_search(
        "embed",
        "models=clip",
        f"models.clip.model_name={tiny_checkpoints['clip']}",
        "datasets=image_folder",
        f"datasets.image_folder.path={SAMPLE_PHOTOS}",
        "tasks.cpu=true",
        f"output_path={table}",
    )
    assert embed.returncode == 0, embed.stderr[-2000:]
    assert "rows: 8" in embed.stdout
    query = ["index=" + str(table), "id=coffee.jpg", "k=3", "json=true"]  # no model to load
    short = img_search("query", *query)
    long = run_module("img_search.search.query", *query)
    assert short.returncode == long.returncode == 0, short.stderr[-2000:]
    assert json.loads(short.stdout) == json.loads(long.stdout)
    assert len(json.loads(short.stdout)["hits"]) == 3
    helped = img_search("serve", "--help")
    assert helped.returncode == 0 and "tables" in helped.stdout
    mistake = img_search("build", "tabel=x")  # Hydra's one-line mistakes, as with python -m
    assert mistake.returncode == 2 and "did you mean table" in mistake.stderr


def test_search_and_serve_do_not_import_the_pipeline() -> None:
    """DESIGN.md's layering: the shared entry helpers live in img_search/cli.py, console.py and
    command_line.py, so search/ and serve/ need nothing of pipeline/."""
    import ast

    offenders = []
    for package in ("search", "serve", "eval", "store", "data", "embedding"):
        for path in sorted((REPO / "img_search" / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                offenders += [
                    f"{path.relative_to(REPO)}:{node.lineno} {name}"
                    for name in names
                    if name.startswith("img_search.pipeline")
                ]
    assert offenders == []


def test_user_text_prints_as_typed_in_tables_bars_and_log_lines(monkeypatch) -> None:
    """Rich markup or emoji codes in a query text, a run name or a CSV field are text: a closing
    tag alone (``[/x]``) would raise in rich, ``[bold]`` or ``:smile:`` would change what is shown."""
    import logging
    import sys

    from rich.table import Table

    from img_search.console import console, make_progress, setup_logging, stdout_console

    typed = "a cat [/x] :smile: [bold]b"
    out = stdout_console(width=200)
    with out.capture() as captured:
        table = Table(title=typed, caption=typed)
        table.add_column(typed)
        table.add_row(typed)
        out.print(table)
        out.print(typed)
    assert captured.get().count(typed) == 5
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # bars: a terminal
    with console.capture() as captured, make_progress(True) as bar:
        task = bar.add_task(typed, total=1, rate=typed, detail=typed)
        bar.update(task, advance=1)
    assert captured.get().count(typed) == 3
    root = logging.getLogger()
    kept = (list(root.handlers), root.level)
    try:
        setup_logging("INFO")  # a terminal: rich log lines
        with console.capture() as captured:
            logging.getLogger("img_search").warning("query %s", typed)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in kept[0]:
            root.addHandler(handler)
        root.setLevel(kept[1])
    assert f"query {typed}" in captured.get()


def test_query_and_build_print_ids_and_paths_with_markup_as_typed(tiny_checkpoints, tmp_path):
    """An image in folders ``cats [`` / ``x] b`` (id ``cats [/x] b/cat.jpg``), its table in ``t [`` /
    ``x]``: the id and the index path are printed as typed (rich would raise on ``[/x]``)."""
    import shutil

    photos = tmp_path / "photos"
    (photos / "cats [" / "x] b").mkdir(parents=True)
    shutil.copy(SAMPLE_PHOTOS / "chelsea.jpg", photos / "cats [" / "x] b" / "cat.jpg")
    shutil.copy(SAMPLE_PHOTOS / "coffee.jpg", photos / "coffee.jpg")
    table = tmp_path / "t [/x]" / "photos.parquet"
    embed = run_module(
        "img_search.pipeline.embed",
        "models=clip",
        f"models.clip.model_name={tiny_checkpoints['clip']}",
        "datasets=image_folder",
        f"datasets.image_folder.path={photos}",
        "tasks.cpu=true",
        f"output_path='{table}'",
    )
    assert embed.returncode == 0, embed.stderr[-2000:]
    query = run_module("img_search.search.query", f"index='{table}'", "id=coffee.jpg", "k=2")
    assert query.returncode == 0, query.stderr[-2000:]
    assert "cats [/x] b/cat.jpg" in query.stdout
    build = run_module("img_search.search.build", f"table='{table}'", "indexes=[flat]")
    assert build.returncode == 0, build.stderr[-2000:]
    assert "t [/x]" in build.stdout
