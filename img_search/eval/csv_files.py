"""CSV files of an evaluation: the ones a user gives (INQUIRE queries and annotations, published
numbers), read strictly, and the ones we write (``evaluate output=*.csv``, the report's
``results.csv``), written so that a spreadsheet never runs a cell.

Reading: a UTF-8 byte order mark (Excel's "CSV UTF-8") is accepted; anything
else wrong (not UTF-8, a line with more or fewer fields than the header, a
field over ``csv.field_size_limit()``, 128 KiB by default, which an unclosed
quote usually causes) is one ``CsvFileError`` naming the file and the line:
a wrong line never becomes a query text ``"None"`` or a missing value.

Writing: text that starts with ``= + - @``, a tab or a carriage return is
what a spreadsheet takes for a formula (OWASP, "CSV Injection"); such a cell
is written with a leading ``'``, which spreadsheets show as text and
hide. Numbers are written as they are.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: First characters a spreadsheet reads as the start of a formula (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class MissingColumns(ValueError):
    """A CSV file without a column the caller needs; callers may word it for their option."""

    def __init__(self, path: Path, missing: Sequence[str], header: Sequence[str]) -> None:
        self.path, self.missing, self.header = path, list(missing), list(header)
        super().__init__(
            f"{path} has no column {', '.join(self.missing)} (it has {', '.join(self.header)})"
        )


class CsvFileError(ValueError):
    """A line of a CSV file that cannot be read as the header says; one line naming file and line."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path} line {line}: {reason}")


class CsvRow(dict[str, str]):
    """The fields of one record by header name, and the line it starts on (for the caller's errors)."""

    def __init__(self, fields: Mapping[str, str], line: int) -> None:
        super().__init__(fields)
        self.line = line


def read_csv_rows(path: str | os.PathLike[str], required: Sequence[str]) -> list[CsvRow]:
    """The records of a CSV file by header name, each with every ``required`` column filled; a
    missing file or column, a line that does not match the header or leaves a required field
    empty, or bytes that are not UTF-8 are one error naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return _records(path, csv.reader(handle), required)
    except UnicodeDecodeError as exc:
        line = _undecodable_line(path)
        raise CsvFileError(
            path, line, f"not UTF-8 ({exc.reason}): save the file as UTF-8 (Excel: CSV UTF-8)"
        ) from None


def _records(path: Path, reader: Any, required: Sequence[str]) -> list[CsvRow]:
    start = 1  # the line the record being read starts on
    try:
        header = next(reader, None) or []
        missing = [c for c in required if c not in header]
        if missing:
            raise MissingColumns(path, missing, header)
        rows = []
        start = reader.line_num + 1
        for fields in reader:
            if fields:  # not a blank line
                rows.append(_row(path, start, header, fields, required))
            start = reader.line_num + 1
        return rows
    except csv.Error as exc:
        reason = str(exc)
        if "larger than field limit" in reason:
            reason = (
                f"a field of more than {csv.field_size_limit():,} characters "
                "(a quote left open takes in the lines after it?)"
            )
        raise CsvFileError(path, start, reason) from None


def _row(
    path: Path, line: int, header: Sequence[str], fields: Sequence[str], required: Sequence[str]
) -> CsvRow:
    if len(fields) != len(header):
        raise CsvFileError(
            path,
            line,
            f"{len(fields)} field{'s' * (len(fields) != 1)} where the header has {len(header)} "
            "(a comma missing, or one in a field left unquoted?)",
        )
    row = CsvRow(dict(zip(header, fields, strict=True)), line)
    empty = [name for name in required if not row[name].strip()]
    if empty:
        raise CsvFileError(path, line, f"{', '.join(empty)} left empty")
    return row


def _undecodable_line(path: Path) -> int:
    """The first line of the file that is not UTF-8 (read again, only once an error is known)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return number


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet shows as text: ``'`` before text that would start a
    formula; numbers and other text unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv_rows(
    path: str | os.PathLike[str], columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> Path:
    """Rows under a header of ``columns`` (a column a row lacks is left empty), every cell made
    ``spreadsheet_safe``: every CSV file the package writes goes through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([spreadsheet_safe(name) for name in columns])
        for row in rows:
            writer.writerow([spreadsheet_safe(row.get(name, "")) for name in columns])
    return path
