"""``console.py``: what we print holds user text, and rich never reads it as markup."""

from __future__ import annotations

from conftest import SAMPLE_PHOTOS, run_module


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
