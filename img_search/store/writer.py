"""Writing embedding tables so that a reader never mistakes a half-written file for a finished one.

Rows stream into *part* files inside ``<output>.partial/``: each part is
written under a temporary name and renamed into place when closed, and
``manifest.json`` (also replaced atomically) lists the closed parts. Only
``finalize()`` produces ``output_path``, by copying the parts' row groups into
one file (again via a temporary name and a rename). Parts are per
(model, dataset), so several models of one job land in one file even when
their dimensions differ.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from img_search.faults import fail_point
from img_search.store import schema as S

ROW_GROUP_BYTES = 64 * 1024 * 1024
MANIFEST = "manifest.json"


class ResumeMismatch(ValueError):
    """A partial output was made by a different job than the one asked for now."""


def job_difference(before: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first setting that differs between two job descriptions, in words; None if equal."""
    for key in sorted(set(before) | set(now)):
        if before.get(key) == now.get(key):
            continue
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            inner = job_difference(old, new)
            return f"{key}.{inner}" if inner else key
        return f"{key}: {old!r} then, {new!r} now"
    return None


def vectors_to_arrow(vectors: np.ndarray, dtype: str = "float32") -> pa.FixedSizeListArray:
    """(n, dim) matrix → fixed-size-list array without per-row Python."""
    matrix = np.ascontiguousarray(vectors, dtype=np.dtype(dtype))
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d matrix of vectors, got shape {matrix.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass
class PartInfo:
    file: str
    model_name: str
    dataset_name: str
    rows: int
    dim: int


class EmbeddingTableWriter:
    """Main-process writer of one output table. Not thread- or process-safe by design."""

    def __init__(
        self,
        output_path: str | os.PathLike[str],
        *,
        output_dtype: str = "float32",
        extra_fields: list[pa.Field] | None = None,
        part_rows: int = 200_000,
    ) -> None:
        if output_dtype not in S.OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {sorted(S.OUTPUT_DTYPES)}")
        self.output_path = Path(output_path)
        self.partial_dir = self.output_path.with_name(self.output_path.name + ".partial")
        self.output_dtype = output_dtype
        self.extra_fields = list(extra_fields or [])
        self.part_rows = part_rows
        self.parts: list[PartInfo] = []
        self.errors: list[tuple[str, str, str, str]] = []
        self._writer: pq.ParquetWriter | None = None
        self._current: PartInfo | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffered_rows = 0
        self._group: tuple[str, str] | None = None
        self._dims: dict[str, int] = {}
        self.job: dict[str, Any] = {}
        self.identities: dict[str, Any] = {}

    # -- lifecycle ------------------------------------------------------------
    def has_partial(self) -> bool:
        return (self.partial_dir / MANIFEST).is_file()

    def start(self, job: dict[str, Any] | None = None) -> None:
        """Begin a fresh run of ``job`` (what the rows will be made of); earlier partial state is discarded."""
        if self.partial_dir.exists():
            shutil.rmtree(self.partial_dir)
        self._remove_stale_finals()
        self.partial_dir.mkdir(parents=True)
        self.job = dict(job or {})
        self._save_manifest()

    def resume(self, job: dict[str, Any]) -> int:
        """Continue the partial run of the same ``job``; returns the rows already done.

        Only parts listed in the manifest count: a part being written when the
        process died is still under its temporary name and is deleted here.
        """
        manifest = json.loads((self.partial_dir / MANIFEST).read_text())
        difference = job_difference(manifest.get("job", {}), job)
        if difference:
            raise ResumeMismatch(
                f"{self.partial_dir} holds a partial run that differs from this one ({difference}); "
                "rerun with the same configuration, or pass tasks.overwrite=true to start over"
            )
        self.job = dict(job)
        self.identities = dict(manifest.get("identities", {}))
        self.parts = [PartInfo(**part) for part in manifest.get("parts", [])]
        self._remove_stale_finals()
        keep = {MANIFEST, *(part.file for part in self.parts)}
        for path in self.partial_dir.iterdir():
            if path.name not in keep:
                path.unlink()
        for part in self.parts:
            self._dims.setdefault(part.model_name, part.dim)
        return sum(part.rows for part in self.parts)

    def record_identity(self, model_name: str, identity: dict[str, Any]) -> None:
        """Remember what produced ``model_name``'s rows; refuse a different model or preprocessing."""
        known = self.identities.get(model_name)
        if known is not None and known.get("fingerprint") != identity.get("fingerprint"):
            changed = sorted(
                k for k in set(known) | set(identity) if known.get(k) != identity.get(k)
            )
            raise ResumeMismatch(
                f"model {model_name} differs from the one that wrote the partial output "
                f"({', '.join(c for c in changed if c != 'fingerprint')} changed); "
                "pass tasks.overwrite=true to start over"
            )
        self.identities[model_name] = identity
        self._save_manifest()

    def done_ids(self, model_name: str, dataset_name: str) -> set[str]:
        """Ids already written for this (model, dataset) by closed parts."""
        done: set[str] = set()
        for part in self.parts:
            if (part.model_name, part.dataset_name) == (model_name, dataset_name):
                table = pq.read_table(self.partial_dir / part.file, columns=[S.ID])
                done.update(table.column(S.ID).to_pylist())
        return done

    def begin_group(self, model_name: str, dataset_name: str) -> None:
        """Rows written from now on belong to this (model, dataset)."""
        self._close_part()
        self._group = (model_name, dataset_name)

    def write(
        self,
        ids: list[str],
        vectors: np.ndarray,
        extra_columns: dict[str, pa.Array] | None = None,
    ) -> None:
        if self._group is None:
            raise RuntimeError("begin_group() before write()")
        if len(ids) == 0:
            return
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        model_name, dataset_name = self._group
        dim = int(vectors.shape[1])
        known = self._dims.setdefault(model_name, dim)
        if known != dim:
            raise ValueError(f"model {model_name} changed dimension from {known} to {dim}")
        columns: dict[str, pa.Array] = {
            S.ID: pa.array(ids, pa.string()),
            S.MODEL: pa.array(np.full(len(ids), model_name, dtype=object), pa.string()),
            S.DATASET: pa.array(np.full(len(ids), dataset_name, dtype=object), pa.string()),
        }
        for field in self.extra_fields:
            columns[field.name] = pa.array((extra_columns or {})[field.name], field.type)
        columns[S.EMBEDDING] = vectors_to_arrow(vectors, self.output_dtype)
        batch = pa.RecordBatch.from_pydict(columns, schema=self._schema(dim))
        self._append(batch, dim)

    def add_errors(
        self, model_name: str, dataset_name: str, failures: list[tuple[str, str]]
    ) -> None:
        self.errors.extend(
            (item_id, dataset_name, model_name, reason) for item_id, reason in failures
        )

    def finalize(self, metadata: dict[str, Any]) -> Path:
        """Assemble the parts into ``output_path`` (atomically) and remove the partial folder."""
        self._close_part()
        dims = {part.dim for part in self.parts}
        dim = dims.pop() if len(dims) == 1 else None
        metadata = {**metadata, "format": S.FORMAT, "output_dtype": self.output_dtype}
        metadata["rows"] = sum(part.rows for part in self.parts)
        final_schema = self._schema(dim).with_metadata(
            {S.METADATA_KEY: json.dumps(metadata, default=str).encode()}
        )
        tmp = self.output_path.with_name(f".{self.output_path.name}.tmp-{os.getpid()}")
        with pq.ParquetWriter(tmp, final_schema) as writer:
            for part in self.parts:
                source = pq.ParquetFile(self.partial_dir / part.file)
                for group in range(source.num_row_groups):
                    table = source.read_row_group(group)
                    writer.write_table(table.cast(final_schema))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        fail_point("finalize")
        os.replace(tmp, self.output_path)
        self._write_errors()
        shutil.rmtree(self.partial_dir, ignore_errors=True)
        return self.output_path

    @property
    def errors_path(self) -> Path:
        return self.output_path.with_name(self.output_path.stem + ".errors.parquet")

    # -- internals ------------------------------------------------------------
    def _remove_stale_finals(self) -> None:
        """A final file that a killed run never renamed into place."""
        for stale in self.output_path.parent.glob(f".{self.output_path.name}.tmp-*"):
            stale.unlink(missing_ok=True)

    def _schema(self, dim: int | None) -> pa.Schema:
        return pa.schema(
            [
                pa.field(S.ID, pa.string()),
                *self.extra_fields,
                pa.field(S.MODEL, pa.string()),
                pa.field(S.DATASET, pa.string()),
                pa.field(S.EMBEDDING, S.embedding_type(dim, self.output_dtype)),
            ]
        )

    def _append(self, batch: pa.RecordBatch, dim: int) -> None:
        if self._current is None:
            model_name, dataset_name = self._group  # type: ignore[misc]
            index = len(self.parts)
            name = f"part-{index:05d}.parquet"
            self._current = PartInfo(name, model_name, dataset_name, 0, dim)
            tmp = self.partial_dir / f".{name}.tmp"
            self._writer = pq.ParquetWriter(tmp, self._schema(dim))
        self._buffer.append(batch)
        self._buffered_rows += batch.num_rows
        self._current.rows += batch.num_rows
        bytes_per_row = dim * (4 if self.output_dtype == "float32" else 2) + 64
        if self._buffered_rows * bytes_per_row >= ROW_GROUP_BYTES:
            self._flush()
        if self._current.rows >= self.part_rows:
            self._close_part()

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            self._writer.write_table(pa.Table.from_batches(self._buffer))
        self._buffer, self._buffered_rows = [], 0

    def _close_part(self) -> None:
        if self._current is None:
            return
        self._flush()
        assert self._writer is not None
        self._writer.close()
        tmp = self.partial_dir / f".{self._current.file}.tmp"
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.partial_dir / self._current.file)
        self.parts.append(self._current)
        self._current, self._writer = None, None
        self._save_manifest()
        fail_point("part_closed")

    def _save_manifest(self) -> None:
        manifest = {
            "job": self.job,
            "identities": self.identities,
            "parts": [asdict(part) for part in self.parts],
        }
        atomic_write_text(self.partial_dir / MANIFEST, json.dumps(manifest, indent=1, default=str))

    def _write_errors(self) -> None:
        path = self.errors_path
        if not self.errors:
            path.unlink(missing_ok=True)
            return
        columns = list(zip(*self.errors, strict=True))
        table = pa.Table.from_arrays(
            [pa.array(c, pa.string()) for c in columns], schema=S.ERRORS_SCHEMA
        )
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
