"""CSV files a user gives to an evaluation (INQUIRE queries and annotations, published numbers)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path


class MissingColumns(ValueError):
    """A CSV file without a column the caller needs; callers may word it for their option."""

    def __init__(self, path: Path, missing: Sequence[str], header: Sequence[str]) -> None:
        self.path, self.missing, self.header = path, list(missing), list(header)
        super().__init__(
            f"{path} has no column {', '.join(self.missing)} (it has {', '.join(self.header)})"
        )


def read_csv_rows(path: str | os.PathLike[str], required: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a CSV file by header name; a missing file or column is one error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise MissingColumns(path, missing, header)
        return list(reader)
