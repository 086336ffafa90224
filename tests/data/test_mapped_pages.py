"""Pages of read-only mappings handed back: the mapping's resident size drops, its bytes stay readable."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from img_search.data.hub_files import load_hf_dataset
from img_search.data.mapped_pages import read_only_mappings, release_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc only")


def resident_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path``, from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            inside = len(head) == 6 and head[5] == str(path.resolve())
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_release_pages_of_a_touched_mapping(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    payload = np.random.default_rng(0).integers(0, 256, 16 * 2**20, dtype=np.uint8).tobytes()
    path.write_bytes(payload)
    mapped = pa.memory_map(str(path))
    data = mapped.read_buffer()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(payload).hexdigest()  # every page
    assert resident_kib(path) >= 15 * 1024
    assert len(read_only_mappings({str(path.resolve())})) == 1

    released = release_pages([path])

    assert released >= 16 * 2**20
    assert resident_kib(path) < 1024
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(payload).hexdigest()  # read back
    assert release_pages([tmp_path / "not-mapped.bin"]) == 0


def test_load_hf_dataset_keeps_no_pages_of_its_cache(tmp_path: Path, monkeypatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    rows = 200_000  # small rows: opening the cache touches every page of it
    table = pa.table({"key": [f"k-{i:07d}" for i in range(rows)], "n": np.arange(rows)})
    pq.write_table(table, tmp_path / "rows.parquet")

    loaded = load_hf_dataset(str(tmp_path / "rows.parquet"), ["train"])

    cache = Path(loaded.cache_files[0]["filename"])
    assert cache.stat().st_size > 4 * 2**20
    assert resident_kib(cache) < 1024
    assert loaded[rows - 1]["key"] == f"k-{rows - 1:07d}"
    assert loaded.data.column("n").to_numpy().sum() == rows * (rows - 1) // 2
