"""Hydra's entry point of every command (``cli.hydra_entry``): fast ``--help``, one-line mistakes (exit 2), ``~`` as home."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, run_module, venv_bin

from img_search.cli.dispatch import COMMANDS
from img_search.cli.hydra_entry import expand_home

CLIS = [
    "img_search.pipeline.embed",
    "img_search.pipeline.embed_text",
    "img_search.search.build",
    "img_search.search.query",
    "img_search.search.info",
    "img_search.search.evaluate",
    "img_search.search.report",
    "img_search.serve",
]
HEAVY = ("torch", "transformers", "datasets")


def run_traced(module: str, *args: str, **kwargs) -> tuple[int, list[str], set[str]]:
    """Run ``python -X importtime -m module args``: exit code, stderr lines (no import lines), modules imported."""
    result = run_module(module, *args, launcher=[sys.executable, "-X", "importtime"], **kwargs)
    lines, imported = [], set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:"):
            imported.add(line.rsplit("|", 1)[-1].strip())
        elif line.strip():
            lines.append(line)
    return result.returncode, lines, imported


@pytest.mark.parametrize("module", CLIS)
def test_help_imports_no_model_library(module):
    code, _, imported = run_traced(module, "--help")
    assert code == 0
    assert "hydra" in imported
    assert not imported & set(HEAVY)


@pytest.mark.parametrize(
    ("command", "groups"),
    [
        ("embed", ["datasets", "engine", "logging", "models", "tasks"]),
        ("embed-text", ["engine", "logging", "models", "tasks", "text_dataset"]),
        ("build", ["indexes", "logging"]),
        ("info", ["logging"]),
        ("query", ["logging"]),
        ("evaluate", ["evaluation", "logging"]),
        ("report", ["evaluation", "logging"]),
        ("serve", ["logging"]),
    ],
)
def test_help_lists_only_the_groups_of_its_command(command, groups):
    """``--help`` lists the groups the command composes, each with its options; the same
    through ``img-search <command>`` and ``python -m``."""
    module = COMMANDS[command].module
    result = run_module(module, "--help")
    assert result.returncode == 0, result.stderr
    listing = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = dict(line.split(": ", 1) for line in listing.splitlines() if ": " in line)
    listed.pop("Compose your configuration from those groups (group=option)", None)
    assert sorted(listed) == groups
    assert listed["logging"] == "debug, default, quiet"
    if command == "embed":
        assert listed["engine"] == "local, ray" and listed["tasks"] == "default"
        short = subprocess.run(
            [venv_bin("img-search"), command, "--help"], capture_output=True, text=True, cwd=REPO
        )
        assert listing in short.stdout


@pytest.mark.parametrize(
    ("module", "args", "line"),
    [
        (
            "img_search.pipeline.embed",
            ["models=siglip22"],
            "unknown models option 'siglip22'; the options are: bioclip, bioclip2, clip, "
            "dfn5b_h14_378, efficientnet_lite0, jina_v4, minilm, open_clip, openclip_b32_laion2b, "
            "siglip, siglip2, simulated; did you mean models=siglip2?",
        ),
        (
            "img_search.pipeline.embed",
            ["datasets=inquire", "datasets.inquire.split=test"],
            "unknown key datasets.inquire.split; did you mean datasets.inquire.splits?",
        ),
        (
            "img_search.pipeline.embed",
            ["models=[clip,siglip3]"],
            "unknown models option 'siglip3'; the options are: bioclip, bioclip2, clip, "
            "dfn5b_h14_378, efficientnet_lite0, jina_v4, minilm, open_clip, openclip_b32_laion2b, "
            "siglip, siglip2, simulated; did you mean models=siglip?",
        ),
        (
            "img_search.pipeline.embed_text",
            ["text_dataset=captions_jsonl", "text_dataset.pth=caps.jsonl"],
            "unknown key text_dataset.pth; did you mean text_dataset.path?",
        ),
        (
            "img_search.search.build",
            ["table=t.parquet", "indexes=faiss_hsnw"],
            "did you mean indexes=faiss_hnsw?",
        ),
        ("img_search.search.query", ["index=t.parquet", "kk=3"], "unknown key kk; did you mean k?"),
        (
            "img_search.search.evaluate",
            ["task=ann", "ann.quries=10"],
            "unknown key ann.quries; did you mean ann.queries?",
        ),
        ("img_search.serve", ["prot=8080"], "unknown key prot; did you mean port?"),
        (
            "img_search.pipeline.embed",
            ["tasks.num_workers=two"],
            "tasks.num_workers: Value 'two' of type 'str' could not be converted to Integer",
        ),
        (
            "img_search.search.query",
            ["index=t.parquet", "model_overrides.prompt_name=query"],
            "unknown key model_overrides.prompt_name; model_overrides has no keys; "
            "+model_overrides.prompt_name=... adds it",
        ),
    ],
)
def test_command_line_mistake_is_one_line_exit_2(module, args, line):
    code, lines, imported = run_traced(module, *args)
    assert code == 2
    assert len(lines) == 1 and lines[0].endswith(line), lines
    assert "+datasets.inquire.split" not in lines[0]
    assert not imported & set(HEAVY)


def test_debug_logging_shows_hydra_traceback():
    result = run_module("img_search.pipeline.embed", "models=siglip22", "logging=debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "Could not find 'models/siglip22'" in result.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["tasks.batch_size=0", "output_path=x.parquet"], "tasks.batch_size must be a positive"),
        ([], "missing value(s): output_path"),
    ],
)
def test_config_error_needs_no_model_library(args, line, tmp_path):
    code, lines, imported = run_traced(
        "img_search.pipeline.embed", f"datasets.image_folder.path={tmp_path}", *args, cwd=tmp_path
    )
    assert code == 2
    assert len(lines) == 1 and line in lines[0], lines
    assert not imported & set(HEAVY)


def test_expand_home_like_the_shell(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    assert expand_home(["datasets.image_folder.path=~/photos", "+x=~", "-m", "a=b~c"]) == [
        "datasets.image_folder.path='/home/me/photos'",
        "+x='/home/me'",
        "-m",
        "a=b~c",
    ]
    # a sweep or a list is left to Hydra's grammar
    assert expand_home(["p=~/a,~/b", "p=[~/a]"]) == ["p=~/a,~/b", "p=[~/a]"]
