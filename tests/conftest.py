"""Shared fixtures: offline environment, tiny checkpoints, local Hub-layout datasets, CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from forked_cli import can_fork, run_forked

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
os.environ.update(OFFLINE)
# Tests run three at a time on two cores: one OpenMP thread per process (pytest's and every
# CLI run's), so that no thread spins waiting for a core another test holds.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A child that dies of a fatal signal (SIGABRT, SIGSEGV) prints where, in every thread: a test
# then fails with the place, not only "exited with -6".
os.environ.setdefault("PYTHONFAULTHANDLER", "1")

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")
SAMPLE_PHOTOS = REPO / "img_search" / "samples" / "photos"
SAMPLE_CAPTIONS = REPO / "img_search" / "samples" / "captions.jsonl"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest work first, so that no worker is left with it at the end: the tests that start
    launchers (the xdist group "launch": ports, and several processes each on two cores, so they
    run one after another on one worker, the longest chain of the suite), then the other ``slow``
    tests, then the rest."""

    def rank(item: pytest.Item) -> int:
        if any(mark.args[:1] == ("launch",) for mark in item.iter_markers("xdist_group")):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: collection order within each


#: ``accelerate launch`` on 2 gloo ranks (``--cpu`` would start only one process).
def accelerate_two_ranks() -> list[str]:
    return [
        venv_bin("accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]
) -> T:
    """``build(folder)`` once per test session, whatever the number of pytest-xdist workers.

    Workers share the parent of their temporary folders; the first to get the
    lock builds, the others reuse its result.
    """
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / f"shared-{name}"
    result = folder / "result.json"
    with FileLock(str(folder) + ".lock"):
        if not result.exists():
            folder.mkdir(exist_ok=True)
            value = build(folder)
            result.write_text(json.dumps(value, default=str))
    return json.loads(result.read_text())


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight CLIP, SigLIP and SigLIP2 saved with ``save_pretrained`` (projection dim 32)."""
    from img_search.testing.checkpoints import (
        build_tiny_clip,
        build_tiny_siglip,
        build_tiny_siglip2,
    )

    def build(root: Path) -> dict[str, str]:
        return {
            "clip": str(build_tiny_clip(root / "clip")),
            "siglip": str(build_tiny_siglip(root / "siglip")),
            "siglip2": str(build_tiny_siglip2(root / "siglip2")),
        }

    built = built_once(tmp_path_factory, "checkpoints", build)
    return {name: Path(path) for name, path in built.items()}


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight open_clip model built by open_clip's factory, in the Hub layout (32-d)."""
    from img_search.testing.open_clip_checkpoint import build_tiny_open_clip

    built = built_once(
        tmp_path_factory, "open-clip", lambda root: str(build_tiny_open_clip(root / "model"))
    )
    return Path(built)


@pytest.fixture(scope="session")
def open_clip_tables(tiny_open_clip, tmp_path_factory) -> dict[str, str]:
    """``models=open_clip`` over photos of several sizes (``photos``, ``images``: batches of 3 of 8)
    and over the sample captions (``captions``: batches of 5 of 32), each by one process."""
    from img_search.testing.open_clip_checkpoint import write_photos

    def build(root: Path) -> dict[str, str]:
        write_photos(root / "photos")
        built = {
            "photos": str(root / "photos"),
            "images": str(root / "images.parquet"),
            "captions": str(root / "captions.parquet"),
        }
        model = ["models=open_clip", f"models.open_clip.model_name={tiny_open_clip}"]
        cli_runner("img_search.pipeline.embed")(
            *model,
            "datasets=image_folder",
            f"datasets.image_folder.path={built['photos']}",
            f"output_path={built['images']}",
            "tasks.batch_size=3",
            "tasks.num_workers=1",
        )
        cli_runner("img_search.pipeline.embed_text")(
            *model,
            "text_dataset=captions_jsonl",
            f"text_dataset.path={SAMPLE_CAPTIONS}",
            f"output_path={built['captions']}",
            "tasks.batch_size=5",
        )
        return built

    return built_once(tmp_path_factory, "open-clip-tables", build)


@pytest.fixture(scope="session")
def inquire_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """An INQUIRE-Rerank-shaped local copy: 41 distinct images over 54 (query, image) rows."""
    from img_search.testing.fixtures import write_inquire_like

    built = built_once(
        tmp_path_factory,
        "inquire",
        lambda root: {"root": str(root), "ids": write_inquire_like(root, n_images=41)},
    )
    return Path(built["root"]), built["ids"]


def run_module(
    module: str,
    *args: str,
    launcher: list[str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` (or ``launcher -m module args``) the way a user would.

    Without a launcher, in a forked child of this process (``forked_cli``): the
    same run in its own process, without paying for torch's import again.
    """
    settings = {"PYTHONUNBUFFERED": "1", "COLUMNS": "160", **(env or {})}
    if can_fork(launcher, env):
        return run_forked(module, list(args), cwd or REPO, settings, timeout)
    command = [*(launcher or [sys.executable]), "-m", module, *args]
    return subprocess.run(
        command,
        cwd=cwd or REPO,
        env={**os.environ, **OFFLINE, **settings},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_runner(module: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """A pipeline CLI; fails the test with both streams when it exits non-zero unexpectedly."""

    def run(*args: str, expect_ok: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
        result = run_module(module, *args, **kwargs)
        if expect_ok and result.returncode != 0:
            pytest.fail(
                f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    return run


@pytest.fixture
def run_embed() -> Callable[..., subprocess.CompletedProcess[str]]:
    return cli_runner("img_search.pipeline.embed")


@pytest.fixture
def run_embed_text() -> Callable[..., subprocess.CompletedProcess[str]]:
    return cli_runner("img_search.pipeline.embed_text")


def venv_bin(name: str) -> str:
    """A console script installed next to the running interpreter (accelerate, torchrun)."""
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope="session")
def demo_tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What ``make demo`` writes: EfficientNet-Lite0 over the sample photos, MiniLM over their captions."""

    def build(root: Path) -> dict[str, str]:
        tables = {"images": root / "images.parquet", "captions": root / "captions.parquet"}
        cli_runner("img_search.pipeline.embed")(
            "models=efficientnet_lite0",
            "datasets=image_folder",
            f"datasets.image_folder.path={SAMPLE_PHOTOS}",
            f"output_path={tables['images']}",
        )
        cli_runner("img_search.pipeline.embed_text")(
            "models=minilm",
            "text_dataset=captions_jsonl",
            f"text_dataset.path={SAMPLE_CAPTIONS}",
            "text_dataset.name=sample_captions",
            f"output_path={tables['captions']}",
        )
        return {name: str(path) for name, path in tables.items()}

    built = built_once(tmp_path_factory, "demo", build)
    return {name: Path(path) for name, path in built.items()}


@pytest.fixture(scope="session")
def sample_tables(
    tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], dict[str, str]]:
    """``sample_tables("clip")``: the sample photos and their captions embedded by a tiny model
    (``images``, ``captions``), built once per test session."""

    def tables(model: str) -> dict[str, str]:
        options = [
            f"models={model}",
            f"models.{model}.model_name={tiny_checkpoints[model]}",
            "tasks.cpu=true",
        ]

        def build(root: Path) -> dict[str, str]:
            built = {
                "images": str(root / "images.parquet"),
                "captions": str(root / "captions.parquet"),
            }
            cli_runner("img_search.pipeline.embed")(
                *options,
                "datasets=image_folder",
                f"datasets.image_folder.path={SAMPLE_PHOTOS}",
                f"output_path={built['images']}",
            )
            cli_runner("img_search.pipeline.embed_text")(
                *options,
                "text_dataset=captions_jsonl",
                f"text_dataset.path={SAMPLE_CAPTIONS}",
                f"output_path={built['captions']}",
            )
            return built

        return built_once(tmp_path_factory, f"sample-tables-{model}", build)

    return tables


@pytest.fixture
def run_query() -> Callable[..., subprocess.CompletedProcess[str]]:
    return cli_runner("img_search.search.query")


@pytest.fixture
def run_build() -> Callable[..., subprocess.CompletedProcess[str]]:
    return cli_runner("img_search.search.build")


@pytest.fixture
def run_evaluate() -> Callable[..., subprocess.CompletedProcess[str]]:
    return cli_runner("img_search.search.evaluate")


@pytest.fixture
def run_report() -> Callable[..., subprocess.CompletedProcess[str]]:
    return cli_runner("img_search.search.report")
