"""``img-search``: one console command whose subcommands are the ``python -m`` tools, unchanged."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import OFFLINE, REPO, SAMPLE_PHOTOS, run_module, venv_bin

from img_search.cli.dispatch import COMMANDS, available


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
