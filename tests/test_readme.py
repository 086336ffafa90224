"""The README's offline command blocks run as written (those marked ``<!-- readme-test -->``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OFFLINE, REPO

BLOCK = re.compile(r"<!-- readme-test -->\s*```bash\n(.*?)```", re.DOTALL)


def marked_blocks() -> list[str]:
    return BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8"))


def test_readme_marks_blocks():
    assert len(marked_blocks()) >= 2


@pytest.mark.slow
@pytest.mark.xdist_group("launch")
@pytest.mark.parametrize("number", range(len(marked_blocks())))
def test_readme_block_runs(number, tmp_path):
    """In a fresh folder that has the repository's samples at the same relative path."""
    (tmp_path / "img_search").mkdir()
    (tmp_path / "img_search" / "samples").symlink_to(REPO / "img_search" / "samples")
    env = {
        **os.environ,
        **OFFLINE,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    script = "set -euo pipefail\n" + marked_blocks()[number]
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rows: 8" in result.stdout or "[(8,)]" in result.stdout
