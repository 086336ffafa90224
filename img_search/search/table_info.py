"""What a table holds and whether each of its indexes is current, from its metadata and side files.

No vector is read: the models × datasets with their rows and errors, the
stored dtype, the size on disk, when it was written and with which library
versions, and next to each (model, dataset) the indexes saved for it
(``search.table_indexes``). ``img-search info`` prints it; ``Table.info()``
in the Python API returns it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class IndexInfo:
    name: str
    kind: str
    current: bool  # built from the table as it is now; a stale one refuses to answer
    rows: int
    path: str


@dataclass
class PairInfo:
    model_name: str
    dataset_name: str
    rows: int
    errors: int  # items that could not be embedded (the errors file names each)
    dim: int | None
    checkpoint: str | None
    indexes: list[IndexInfo] = field(default_factory=list)


@dataclass
class TableInfo:
    path: str
    form: str  # "file" (x.parquet) or "folder"
    kind: str  # "image" or "caption"
    dtype: str  # of the stored vectors
    size_bytes: int
    created: str | None
    rows: int
    errors: int
    errors_file: str | None
    versions: dict[str, Any]
    pairs: list[PairInfo]

    @property
    def stale(self) -> list[IndexInfo]:
        return [i for p in self.pairs for i in p.indexes if not i.current]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def table_info(path: str | os.PathLike[str]) -> TableInfo:
    """What ``img-search info`` shows of the table at ``path`` (a file or a folder table)."""
    from img_search.search.table_indexes import saved_indexes
    from img_search.store import TableLayout, read_metadata
    from img_search.store.reader import table_files

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"embedding table not found: {path}")
    metadata = read_metadata(path)
    layout = TableLayout(path)
    models = metadata.get("models") or {}
    pairs: dict[tuple[str, str], PairInfo] = {}
    for model, dataset, rows, errors in _pair_counts(path, metadata):
        identity = models.get(model) or {}
        pairs[(model, dataset)] = PairInfo(
            model, dataset, rows, errors, identity.get("dim"), identity.get("checkpoint")
        )
    for entry in saved_indexes(path):
        key = (entry.model_name, entry.dataset_name)
        if key not in pairs:  # built for rows the table no longer holds
            pairs[key] = PairInfo(*key, rows=0, errors=0, dim=None, checkpoint=None)
        index = IndexInfo(
            entry.name, entry.kind, entry.current, int(entry.meta.get("count", 0)), str(entry.path)
        )
        pairs[key].indexes.append(index)
    files = [*table_files(path), layout.metadata_file] if layout.is_folder else [path]
    errors_file = layout.errors_path
    return TableInfo(
        path=str(path),
        form="folder" if layout.is_folder else "file",
        kind=str(metadata.get("kind", "image")),
        dtype=str(metadata.get("output_dtype", "float32")),
        size_bytes=sum(f.stat().st_size for f in set(files) if f.is_file()),
        created=metadata.get("created"),
        rows=sum(p.rows for p in pairs.values()),
        errors=sum(p.errors for p in pairs.values()),
        errors_file=str(errors_file) if errors_file.is_file() else None,
        versions=dict(metadata.get("versions") or {}),
        pairs=list(pairs.values()),
    )


def _pair_counts(path: Path, metadata: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """(model, dataset, rows, errors) of each pair: as the metadata records them, or counted (a
    table written before pairs were recorded)."""
    recorded = metadata.get("pairs")
    if isinstance(recorded, list) and recorded:
        counts: dict[tuple[str, str], list[int]] = {}
        for pair in recorded:
            key = (str(pair["model"]), str(pair["dataset"]))
            rows, errors = counts.setdefault(key, [0, 0])
            counts[key] = [rows + int(pair.get("rows", 0)), errors + int(pair.get("errors", 0))]
        return [(*key, rows, errors) for key, (rows, errors) in counts.items()]
    from img_search.store.selection import pair_rows

    return [(model, dataset, rows, 0) for (model, dataset), rows in pair_rows(path).items()]
