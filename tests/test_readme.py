"""Every ``bash`` and ``python`` block of the README and of ``docs/*.md`` runs as written, offline,
or says why it cannot here; the README stays a short guide, and no page carries a commit hash.

A block is run unless the line before it is ``<!-- readme-skip: <why> -->``,
so a new block is tested by default. The runnable blocks of each file run in
that file's order, in one folder per file that holds what a reader would
have after ``make demo``: the bundled samples at their relative path,
``~/photos`` and ``make demo``'s tables. Blocks that start 2 ranks run in
tests of their own (one at a time with the other launch tests).
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
from conftest import OFFLINE, REPO, SAMPLE_PHOTOS

BLOCK = re.compile(
    r"(?:<!-- readme-skip:(?P<skip>[^>]*)-->\s*\n)?^```(?P<lang>bash|python)\n(?P<body>.*?)^```",
    re.DOTALL | re.M,
)
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 400
#: A token of 7 to 40 lower-case hex digits that mixes digits and letters: what a commit hash
#: (short or full) looks like. Words have letters past ``f`` or no digit, numbers have no letter,
#: and longer digests (sha256: 64) or colours (6) are not 7 to 40 long, so on prose, commands and
#: numbers it matches nothing but a hash.
HEX_TOKEN = re.compile(r"\b[0-9a-f]{7,40}\b")
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.M)


@dataclass
class Block:
    page: Path
    line: int
    body: str
    skip: str | None
    lang: str = "bash"

    def command(self) -> list[str]:
        if self.lang == "python":  # -P: the reader's img_search/samples folder is not the package
            return [sys.executable, "-P", "-c", self.body]
        return ["bash", "-c", "set -euo pipefail\n" + self.body]

    def starts_ranks(self) -> bool:
        return bool(re.search(r"^\s*(accelerate launch|torchrun)\b", self.body, re.M))


def page_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [
        Block(page, text.count("\n", 0, m.start("body")) + 1, m["body"], m["skip"], m["lang"])
        for m in BLOCK.finditer(text)
    ]


def name(page: Path) -> str:
    return str(page.relative_to(REPO))


def runs() -> list[pytest.param]:
    """One test per page and kind of block (one process, or launchers) that has runnable blocks."""
    params = []
    for page in PAGES:
        runnable = [b for b in page_blocks(page) if b.skip is None]
        for launchers in (False, True):
            if any(b.starts_ranks() == launchers for b in runnable):
                marks = [pytest.mark.xdist_group("launch")] if launchers else []
                label = f"{name(page)}-{'launchers' if launchers else 'one-process'}"
                params.append(pytest.param(page, launchers, id=label, marks=marks))
    return params


def test_every_block_runs_or_says_why_not():
    blocks = {page: page_blocks(page) for page in PAGES}
    everything = [b for page_blocks_ in blocks.values() for b in page_blocks_]
    skips = [f"{name(b.page)}:{b.line}" for b in everything if b.skip is not None]
    assert all(b.skip is None or b.skip.strip() for b in everything), (
        f"a readme-skip without a reason: {skips}"
    )
    assert len(blocks[README]) >= 10
    assert len([b for b in blocks[README] if b.skip is None]) >= 5
    docs_runnable = [b for b in everything if b.page != README and b.skip is None]
    assert len(docs_runnable) >= 3, "the docs' command blocks are not found"


def test_readme_is_a_short_guide():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES})"


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_page_holds_no_commit_hash(page: Path):
    text = page.read_text(encoding="utf-8")
    hashes = [
        f"line {text.count(chr(10), 0, m.start()) + 1}: {m[0]}"
        for m in HEX_TOKEN.finditer(text)
        if re.search(r"[0-9]", m[0]) and re.search(r"[a-f]", m[0])
    ]
    assert not hashes, f"{name(page)} names commits (project history belongs in git): {hashes}"


def anchors(page: Path) -> set[str]:
    """The ids GitHub gives the page's headings: lower case, punctuation dropped, spaces to ``-``."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    ids = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        plain = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
        ids.add(plain.replace(" ", "-"))
    return ids


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_relative_links_reach_a_file_and_heading(page: Path):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for m in LINK.finditer(text):
        target = m["target"]
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {name(linked)}")
    assert not broken, f"{name(page)}: {broken}"


def reader_folder(root: Path, demo_tables: dict[str, Path]) -> dict[str, str]:
    """What the README assumes a reader has, in ``root``; returns the environment to run in."""
    (root / "img_search").mkdir()
    (root / "img_search" / "samples").symlink_to(REPO / "img_search" / "samples")
    home = root / "home"
    home.mkdir()
    (home / "photos").symlink_to(SAMPLE_PHOTOS)
    (root / "out" / "demo").mkdir(parents=True)
    for table in demo_tables.values():  # copies: a query saves its index next to the table
        shutil.copy(table, root / "out" / "demo" / table.name)
    return {
        **os.environ,
        **OFFLINE,
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


@pytest.mark.slow
@pytest.mark.parametrize(("page", "launchers"), runs())
def test_blocks_run(page: Path, launchers: bool, tmp_path: Path, demo_tables):
    env = reader_folder(tmp_path, demo_tables)
    ran = []
    for block in page_blocks(page):
        if block.skip is not None or block.starts_ranks() != launchers:
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
            f"{name(page)} line {block.line}: exit {result.returncode}\n"
            + result.stdout[-3000:]
            + result.stderr[-3000:]
        )
        ran.append(block.line)
    assert ran
    if page == README:  # datasets.image_folder.path=~/photos, and the files the blocks create
        assert (tmp_path / "out" / "photos.parquet").is_file()
        assert (tmp_path / "caps.jsonl").is_file() and (tmp_path / "my_crop.jpg").is_file()
    assert not (tmp_path / "multirun.yaml").exists() and not (tmp_path / "outputs").exists()
