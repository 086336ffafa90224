"""Before a table is published: each part file still holds what its completion record vouches for.

A part is checked by its size, the sha256 of its bytes (one streaming read,
remembered for this process while the file is unchanged), its Parquet footer
(its rows) and its ``model_name`` / ``dataset_name`` columns. The digest is
taken when the part is committed (``part_digest``), from the file just
written; a finaliser that committed the part itself, and has seen the file
unchanged since (inode, size, mtime), does not read it again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from img_search.pipeline.state.record import CompletionRecord, PartRef
from img_search.store import schema as S
from img_search.store.layout import TableLayout

#: (path, inode, size, mtime) → sha256 of the parts this process has read.
_digests: dict[tuple[str, int, int, int], str] = {}
_CHUNK = 4 * 2**20


def part_digest(path: Path) -> str:
    """The sha256 of ``path``'s bytes, in one streaming read (or remembered, if unchanged)."""
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def part_problems(
    layout: TableLayout, records: Sequence[CompletionRecord]
) -> list[tuple[CompletionRecord, str]]:
    """Each record with a part that does not hold what it vouches for, and why; the parts are
    read a few at a time (hashing releases the GIL), as a shared filesystem serves them best."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = pool.map(lambda r: part_problem(layout, r), records)
        return [(r, p) for r, p in zip(records, problems, strict=True) if p is not None]


def part_problem(layout: TableLayout, record: CompletionRecord) -> str | None:
    """Why a part of ``record`` does not hold what the record vouches for; None if each one does."""
    for part in record.parts:
        problem = _check(layout, part, record.model, record.dataset)
        if problem:
            return f"part {part.name} {problem}"
    return None


def _check(layout: TableLayout, part: PartRef, model: str, dataset: str) -> str | None:
    try:
        path = layout.locate_part(part.name)
    except FileNotFoundError:
        return "is missing"
    if path.is_symlink():
        return "is a link, not a file this job wrote"
    size = path.stat().st_size
    if size != part.size:
        return f"has {size} bytes, and the record vouches for {part.size}"
    if part_digest(path) != part.sha256:
        return "has other bytes than the record vouches for (sha256)"
    try:
        file = pq.ParquetFile(path)
        rows = file.metadata.num_rows
        names = pq.read_table(path, columns=[S.MODEL, S.DATASET])
    except Exception as exc:  # pyarrow's errors: ArrowInvalid, OSError …
        return f"is not a readable Parquet file ({exc})"
    if rows != part.rows:
        return f"holds {rows} rows, and the record vouches for {part.rows}"
    for column, expected in ((S.MODEL, model), (S.DATASET, dataset)):
        found = set(pc.unique(names.column(column)).to_pylist()) - {expected}
        if found:
            return f"holds rows of {column} {sorted(map(str, found))[0]!r}, not {expected!r}"
    return None
