"""Embedding tables written by the store's own writer, without running a model (tests, benchmarks).

Each part is written chunk by chunk through ``PartWriter`` where the pipeline
stages its parts, then finished as the pipeline finishes a job: assembled
into one ``.parquet`` file, or published as a folder table (the parts and a
``_common_metadata`` that lists them). A table of millions of rows
takes the memory of one chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from img_search.atomic import remove
from img_search.store import PartWriter, TableLayout
from img_search.store.writer import assemble_file, publish_folder, table_schema, with_metadata

#: model name, dataset name, and the part's rows as chunks of (ids, vectors)
Part = tuple[str, str, Iterable[tuple[Sequence[str], np.ndarray]]]


def write_embedding_table(
    path: str | os.PathLike[str],
    parts: Iterable[Part],
    *,
    output_dtype: str = "float32",
    metadata: dict[str, Any] | None = None,
) -> TableLayout:
    """A finished table at ``path`` (a folder table unless it ends in ``.parquet``), one part file per part."""
    layout = TableLayout.of(path)
    layout.parts_dir.mkdir(parents=True, exist_ok=True)
    files, dims = [], set()
    for number, (model_name, dataset_name, chunks) in enumerate(parts):
        file = layout.parts_dir / f"part-{number:05d}.parquet"
        writer = PartWriter(
            file,
            model_name,
            dataset_name,
            output_dtype=output_dtype,
        )
        for ids, vectors in chunks:
            writer.write(ids, vectors)
        if writer.close():
            files.append(file)
            dims.add(writer.dim)
    recorded = {"kind": "image", **(metadata or {})}
    if layout.is_folder:
        recorded["parts"] = [file.name for file in files]
        publish_folder(layout, with_metadata(table_schema(None, output_dtype), recorded), files)
    else:
        dim = dims.pop() if len(dims) == 1 else None
        assemble_file(layout.path, with_metadata(table_schema(dim, output_dtype), recorded), files)
    remove(layout.state_dir)
    return layout


def rewrite_as_before(path: str | os.PathLike[str]) -> None:
    """Rewrite a finished table's files as img_search wrote them before vectors were stored plain:
    every column dictionary-encoded and Snappy-compressed (pyarrow's defaults), and a folder
    table's vectors as plain lists (``list<half>`` parts). Row groups and metadata are kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from img_search.atomic import atomic_write
    from img_search.store import schema as S
    from img_search.store.reader import table_files

    layout = TableLayout.of(path)
    for file in table_files(layout.path):
        source = pq.ParquetFile(file)
        schema = source.schema_arrow
        if layout.is_folder:
            value = schema.field(S.EMBEDDING).type.value_type
            at = schema.get_field_index(S.EMBEDDING)
            schema = schema.set(at, pa.field(S.EMBEDDING, pa.list_(value)))

        def write(tmp: Any, source: Any = source, schema: pa.Schema = schema) -> None:
            with pq.ParquetWriter(tmp, schema) as writer:
                for group in range(source.num_row_groups):
                    writer.write_table(source.read_row_group(group).cast(schema))

        atomic_write(file, write)
        source.close()


def table_like(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    ids: Sequence[str],
    vectors: np.ndarray,
    nulls: Sequence[int] = (),
) -> TableLayout:
    """A one-file table at ``target`` with ``source``'s metadata and model and dataset names, and
    these rows; the rows at ``nulls`` get a null ``embedding``, as another tool could write one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from img_search.store import schema as S

    schema = pq.read_schema(source)
    first = pq.read_table(source, columns=[S.MODEL, S.DATASET]).slice(0, 1).to_pylist()[0]
    mask = np.zeros(len(ids), bool)
    mask[list(nulls)] = True
    values = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
    embedding = pa.FixedSizeListArray.from_arrays(values, vectors.shape[1], mask=pa.array(mask))
    columns = {
        S.ID: pa.array(ids, pa.string()),
        S.MODEL: pa.array([first[S.MODEL]] * len(ids), pa.string()),
        S.DATASET: pa.array([first[S.DATASET]] * len(ids), pa.string()),
        S.EMBEDDING: embedding,
    }
    pq.write_table(pa.table([columns[name] for name in schema.names], schema=schema), target)
    return TableLayout.of(target)


def table_with_left_out_rows(
    source: str | os.PathLike[str], target: str | os.PathLike[str], damage: str, rows: int = 60
) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """``table_like`` of ``rows`` random unit vectors of ``source``'s dimension, some of them damaged:
    ``damage="nan"`` puts NaN or infinity in three rows, ``"null"`` makes two null.

    Returns the ids, the vectors (damaged as written; a null row keeps its values) and the
    reason each damaged id is left out for (``store.vectors``).
    """
    import pyarrow.parquet as pq

    from img_search.store import schema as S
    from img_search.store.vectors import NOT_FINITE, NULL

    dim = pq.read_schema(source).field(S.EMBEDDING).type.list_size
    vectors = np.random.default_rng(7).standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"item-{i:05d}" for i in range(rows)]
    nulls: list[int] = []
    if damage == "nan":
        vectors[3, 100], vectors[17], vectors[30] = np.nan, np.nan, np.inf
        bad = {ids[i]: NOT_FINITE for i in (3, 17, 30)}
    elif damage == "null":
        nulls = [5, 41]
        bad = {ids[i]: NULL for i in nulls}
    else:
        raise ValueError(f"damage is nan or null, not {damage!r}")
    table_like(source, target, ids, vectors, nulls)
    return ids, vectors, bad


def expected_hits(
    ids: Sequence[str], vectors: np.ndarray, left_out: Iterable[str], query: int, k: int
) -> list[str]:
    """The ``k`` nearest ids to row ``query`` (itself excluded) among the rows not left out, by numpy."""
    skip = set(left_out)
    rows = [i for i, item in enumerate(ids) if item not in skip and i != query]
    scores = vectors[rows] @ vectors[query]
    return [ids[rows[j]] for j in np.argsort(-scores, kind="stable")[:k]]
