"""Where the pieces of one embedding table live: the finished table, its errors and its job state.

Two forms, chosen by the output path:

- ``x.parquet``: one Parquet file, assembled once every shard is done.
- ``x`` (no ``.parquet`` suffix): a *folder table*, the part files
  (``part-*.parquet``) plus ``_common_metadata`` (Parquet's convention for a
  folder's schema and key/value metadata). No final copy is made; pyarrow,
  polars, DuckDB and 🤗 datasets read the folder as it is.

Either way, the errors are ``<stem>.errors.parquet`` next to the table (not
inside the folder, where ``folder/*.parquet`` globs would read it as rows),
and the running job keeps its state (claims, completion records, staged
parts) in ``<output>.partial/`` until the table is finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

COMMON_METADATA = "_common_metadata"
SUFFIX = ".parquet"


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
    def errors_path(self) -> Path:
        return self.path.with_name(f"{self.stem}.errors.parquet")

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
