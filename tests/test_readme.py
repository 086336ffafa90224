"""Every ``bash`` and ``python`` block of the README runs as written, offline, or says why it cannot here.

A block is run unless the line before it is ``<!-- readme-skip: <why> -->``,
so a new block is tested by default. The runnable blocks run in README order
in two tests (those that start 2 ranks, and the rest), each in one folder that
holds what a reader would have: the bundled samples at their relative path,
``~/photos``, ``caps.jsonl``, ``my_crop.jpg`` and ``make demo``'s tables.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import OFFLINE, REPO, SAMPLE_CAPTIONS, SAMPLE_PHOTOS

BLOCK = re.compile(
    r"(?:<!-- readme-skip:(?P<skip>[^>]*)-->\s*\n)?^```(?P<lang>bash|python)\n(?P<body>.*?)^```",
    re.DOTALL | re.M,
)


@dataclass
class Block:
    line: int
    body: str
    skip: str | None
    lang: str = "bash"

    def command(self) -> list[str]:
        if self.lang == "python":  # -P: the reader's img_search/samples folder is not the package
            return [sys.executable, "-P", "-c", self.body]
        return ["bash", "-c", "set -euo pipefail\n" + self.body]


def readme_blocks() -> list[Block]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [
        Block(text.count("\n", 0, m.start("body")) + 1, m["body"], m["skip"], m["lang"])
        for m in BLOCK.finditer(text)
    ]


def test_every_block_runs_or_says_why_not():
    blocks = readme_blocks()
    assert len(blocks) >= 10
    assert all(b.skip is None or b.skip.strip() for b in blocks), "a readme-skip without a reason"
    assert len([b for b in blocks if b.skip is None]) >= 5


def reader_folder(root: Path, demo_tables: dict[str, Path]) -> dict[str, str]:
    """What the README assumes a reader has, in ``root``; returns the environment to run in."""
    (root / "img_search").mkdir()
    (root / "img_search" / "samples").symlink_to(REPO / "img_search" / "samples")
    home = root / "home"
    home.mkdir()
    (home / "photos").symlink_to(SAMPLE_PHOTOS)
    shutil.copy(SAMPLE_CAPTIONS, root / "caps.jsonl")
    shutil.copy(SAMPLE_PHOTOS / "chelsea.jpg", root / "my_crop.jpg")
    (root / "out" / "demo").mkdir(parents=True)
    for table in demo_tables.values():  # copies: a query saves its index next to the table
        shutil.copy(table, root / "out" / "demo" / table.name)
    return {
        **os.environ,
        **OFFLINE,
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def starts_ranks(block: Block) -> bool:
    return bool(re.search(r"^\s*(accelerate launch|torchrun)\b", block.body, re.M))


@pytest.mark.slow
@pytest.mark.parametrize(
    "launchers",
    [
        pytest.param(False, id="one-process"),
        # blocks that start 2 ranks run one at a time with the other launch tests
        pytest.param(True, id="launchers", marks=pytest.mark.xdist_group("launch")),
    ],
)
def test_readme_blocks_run(launchers, tmp_path, demo_tables):
    env = reader_folder(tmp_path, demo_tables)
    ran = []
    for block in readme_blocks():
        if block.skip is not None or starts_ranks(block) != launchers:
            continue
        result = subprocess.run(
            block.command(),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (
            f"README.md line {block.line}: exit {result.returncode}\n"
            + result.stdout[-3000:]
            + result.stderr[-3000:]
        )
        ran.append(block.line)
    assert len(ran) >= (1 if launchers else 4)
    if not launchers:
        assert (
            tmp_path / "out" / "photos.parquet"
        ).is_file()  # datasets.image_folder.path=~/photos
    assert not (tmp_path / "multirun.yaml").exists() and not (tmp_path / "outputs").exists()
