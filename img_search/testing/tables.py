"""Embedding tables written by the store's own writer, without running a model (tests, benchmarks).

Each part is written chunk by chunk through ``PartWriter`` where the pipeline
stages its parts, then finished as the pipeline finishes a job: assembled
into one ``.parquet`` file, or published as a folder table (plain-list parts
and a ``_common_metadata`` that lists them). A table of millions of rows
takes the memory of one chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from img_search.store import PartWriter, TableLayout
from img_search.store.atomic import remove
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
            fixed_size=not layout.is_folder,
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
