"""Where the pieces of one embedding table live: the finished table, its errors and its job state.

Two forms, chosen by the output path:

- ``x.parquet``: one Parquet file, assembled once every shard is done.
- ``x`` (no ``.parquet`` suffix): a *folder table*, the part files
  (``part-*.parquet``) plus ``_common_metadata`` (Parquet's convention for a
  folder's schema and key/value metadata). No final copy is made; pyarrow,
  polars, DuckDB and 🤗 datasets read the folder as it is.

The running job keeps its state (claims, completion records, staged parts)
in ``<output>.partial/`` until the table is finished.

Side files (the errors, saved indexes, the Milvus Lite database) are named
here and nowhere else, so that no two outputs can name the same one:

- ``x.parquet``: ``x.errors.parquet``, ``x.<model>.<dataset>.<index>.index/``
  and ``x.milvus.db/`` next to it;
- folder ``x``: the same names inside ``x.side/`` next to it (``x.side/errors.parquet``…).
  Not ``x.errors.parquet``, which is the file table ``x.parquet``'s, and not
  inside the folder, where ``x/*.parquet`` globs and 🤗 datasets would read
  them as rows.

A folder table written before side folders existed keeps its errors and
indexes where they are (``x.errors.parquet``, ``x.<model>.<dataset>.<index>.index``)
as long as they are provably its own: ``x.parquet`` does not exist, and the
errors file holds as many rows as the table's metadata counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

COMMON_METADATA = "_common_metadata"
SUFFIX = ".parquet"
SIDE = ".side"
ERRORS = "errors.parquet"
MILVUS_LITE = "milvus.db"


@dataclass(frozen=True)
class TableLayout:
    path: Path

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> TableLayout:
        return cls(Path(path).expanduser().resolve())

    @property
    def is_folder(self) -> bool:
        return not self.path.name.endswith(SUFFIX)

    @property
    def stem(self) -> str:
        return self.path.name.removesuffix(SUFFIX)

    @property
    def metadata_file(self) -> Path:
        """The file whose Parquet key/value metadata describes the finished table."""
        return self.path / COMMON_METADATA if self.is_folder else self.path

    @property
    def twin(self) -> Path:
        """The output of the other form with the same stem: ``x`` for ``x.parquet``, and back."""
        return self.path.with_name(self.stem if not self.is_folder else self.path.name + SUFFIX)

    @property
    def side_dir(self) -> Path:
        """Where the side files are: the folder next to a folder table, the table's folder for a file."""
        return self.path.with_name(self.path.name + SIDE) if self.is_folder else self.path.parent

    @property
    def side_name(self) -> str:
        """What the side files are named after: ``x`` for ``x.parquet``, ``x.side`` for the folder
        ``x`` (also a Milvus collection's name, so the two never share one on a server)."""
        return self.side_dir.name if self.is_folder else self.stem

    def side_file(self, name: str) -> Path:
        """``x.<name>`` next to the file table ``x.parquet``; ``x.side/<name>`` for the folder ``x``."""
        return (
            self.side_dir / name if self.is_folder else self.path.with_name(f"{self.stem}.{name}")
        )

    def legacy_side_file(self, name: str) -> Path | None:
        """Where img_search put a folder table's side file before side folders (None for a file table)."""
        return self.path.with_name(f"{self.stem}.{name}") if self.is_folder else None

    @property
    def errors_path(self) -> Path:
        """The errors table (id and reason of each item that could not be embedded)."""
        path = self.side_file(ERRORS)
        legacy = self.legacy_side_file(ERRORS)
        if legacy is not None and not path.exists() and self._owns_legacy_errors(legacy):
            return legacy
        return path

    def index_dir(self, model_name: str, dataset_name: str, name: str) -> Path:
        """The saved index ``name`` of one (model, dataset) of the table."""
        return self.side_file(f"{model_name}.{dataset_name}.{name}.index")

    @property
    def milvus_lite_file(self) -> Path:
        """The Milvus Lite database that the table's ``milvus`` indexes use by default."""
        return self.side_file(MILVUS_LITE)

    @staticmethod
    def owner_of(side_file: Path, table_name: str) -> Path:
        """The table called ``table_name`` whose side file ``side_file`` is (found by where it lies)."""
        folder = side_file.parent
        if folder.name == table_name + SIDE:
            return folder.with_name(table_name)
        return folder / table_name

    def _owns_legacy_errors(self, legacy: Path) -> bool:
        """Whether the folder table's errors are still at ``legacy`` (see the module's docstring)."""
        twin = TableLayout(self.twin)
        if not legacy.is_file() or twin.path.exists() or twin.state_dir.exists():
            return False
        if not self.finished():
            return False
        import pyarrow.parquet as pq  # (the pipeline's processes import the layout early)

        from img_search.store.reader import read_metadata

        try:
            counted = int(read_metadata(self.path).get("errors") or 0)
            return counted > 0 and pq.read_metadata(legacy).num_rows == counted
        except (OSError, ValueError, TypeError):
            return False

    @property
    def state_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")

    @property
    def parts_dir(self) -> Path:
        """Committed part files of the running job (renamed into a folder table at the end)."""
        return self.state_dir / "parts"

    @property
    def staging_dir(self) -> Path:
        """A new folder table, assembled here and renamed into place in one step."""
        return self.state_dir / "table"

    def locate_part(self, name: str) -> Path:
        """Where a committed part is now: staged, being assembled, or already in the folder table."""
        for folder in (self.parts_dir, self.staging_dir, self.path):
            if (folder / name).is_file():
                return folder / name
        raise FileNotFoundError(f"part file {name} of {self.path} is missing")

    def finished(self) -> bool:
        return self.metadata_file.is_file()

    def occupied(self) -> bool:
        """Something is at the output path (a finished table, or anything else)."""
        return self.path.exists()
