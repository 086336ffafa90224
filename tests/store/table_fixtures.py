"""Embedding tables for the store's tests: parts written in small batches as the pipeline writes
them, finished as one file or published as a folder, and the two groups of rows most tests use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from img_search.store import PartWriter, TableLayout
from img_search.store import schema as S
from img_search.store.writer import assemble_file, publish_folder, table_schema, with_metadata

Group = tuple[str, str, list[str], np.ndarray]  # model, dataset, ids, vectors


@pytest.fixture(autouse=True)
def _no_fault_injection(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fail_point`` kills the process when IMG_SEARCH_FAULT names it; never here."""
    monkeypatch.delenv("IMG_SEARCH_FAULT", raising=False)


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ids_for(prefix: str, n: int) -> list[str]:
    return [f"{prefix}/{i:04d}.jpg" for i in range(n)]


def write_part(
    path: Path,
    group: Group,
    *,
    batch: int = 4,
    extra: dict[str, list[Any]] | None = None,
    **options: Any,
) -> Path:
    """One part file, written in small batches like the pipeline does."""
    model, dataset, ids, vectors = group
    part = PartWriter(path, model, dataset, **options)
    for start in range(0, len(ids), batch):
        columns = {k: v[start : start + batch] for k, v in (extra or {}).items()}
        part.write(ids[start : start + batch], vectors[start : start + batch], columns or None)
    assert part.close() == len(ids)
    return path


def make_file(
    path: Path,
    groups: list[Group],
    *,
    metadata: dict[str, Any] | None = None,
    output_dtype: str = "float32",
    earlier: Path | None = None,
    first_part: int = 0,
) -> int:
    """A one-file table from parts staged where the pipeline stages them."""
    layout = TableLayout.of(path)
    layout.parts_dir.mkdir(parents=True, exist_ok=True)
    parts = [
        write_part(layout.parts_dir / f"part-{i:05d}.parquet", g, output_dtype=output_dtype)
        for i, g in enumerate(groups, first_part)
    ]
    dims = {int(g[3].shape[1]) for g in groups}
    if earlier is not None:
        earlier_type = pq.read_schema(earlier).field(S.EMBEDDING).type
        dims.add(earlier_type.list_size if pa.types.is_fixed_size_list(earlier_type) else -1)
    dim = dims.pop() if len(dims) == 1 else None
    schema = with_metadata(table_schema(dim, output_dtype), metadata or {"job": {"name": "test"}})
    return assemble_file(path, schema, parts, earlier=earlier)


def stage_parts(
    layout: TableLayout, groups: list[Group], *, first_part: int = 0, **options: Any
) -> list[Path]:
    """Plain-list parts under ``<out>.partial/parts/``, as a folder table's parts must be."""
    layout.parts_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_part(layout.parts_dir / f"part-{i:05d}.parquet", g, fixed_size=False, **options)
        for i, g in enumerate(groups, first_part)
    ]


def folder_schema(
    parts: list[str], metadata: dict[str, Any] | None = None, output_dtype: str = "float32"
) -> pa.Schema:
    return with_metadata(table_schema(None, output_dtype), {**(metadata or {}), "parts": parts})


def make_folder(
    path: Path, groups: list[Group], *, metadata: dict[str, Any] | None = None, **options: Any
) -> TableLayout:
    layout = TableLayout.of(path)
    parts = stage_parts(layout, groups, **options)
    dtype = options.get("output_dtype", "float32")
    publish_folder(layout, folder_schema([p.name for p in parts], metadata, dtype), parts)
    return layout


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def by_key(models: list[Any], ids: list[Any], vectors: list[Any]) -> dict[tuple[str, str], Any]:
    """(model, id) → vector, for tools that do not promise an order across files."""
    return {
        (m, i): np.asarray(v, dtype=np.float32)
        for m, i, v in zip(models, ids, vectors, strict=True)
    }


@pytest.fixture
def two_groups() -> list[Group]:
    return [
        ("clip", "inquire", ids_for("inq", 9), unit_rows(9, 8, 0)),
        ("clip", "flickr30k", ids_for("f30k", 6), unit_rows(6, 8, 1)),
    ]


@pytest.fixture
def mixed_dims() -> list[Group]:
    """Two models of different dimensions over the same images."""
    ids = ids_for("inq", 7)
    return [
        ("clip", "inquire", ids, unit_rows(7, 8, 3)),
        ("tiny", "inquire", ids, unit_rows(7, 4, 4)),
    ]


def expected_rows(groups: list[Group]) -> dict[tuple[str, str], np.ndarray]:
    return {(g[0], i): v for g in groups for i, v in zip(g[2], g[3], strict=True)}


def assert_same_rows(actual: dict[tuple[str, str], np.ndarray], groups: list[Group]) -> None:
    expected = expected_rows(groups)
    assert set(actual) == set(expected)
    for key, vector in expected.items():
        np.testing.assert_array_equal(actual[key], vector)
