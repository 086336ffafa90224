"""A shard's completion record: what one commit vouches for, written and read by this module only.

The record ``records/<model>/<dataset>/<shard>.json`` is the commit point of
a shard (``claims.py``). It vouches for:

- its part files, each by a plain name inside the job folder
  (``part-<model>-<dataset>-<shard>-…``), its size, its rows and the sha256
  of its bytes;
- the positions done, and how they are accounted for: every position done
  is a row, an error, or held no item (``skipped``), so
  ``rows + item errors + skipped`` equals the positions done;
- the (model, dataset, shard) it belongs to.

A record that does not parse as one, or that contradicts itself or its
place (``problem``), is named once in a warning and read as absent: its
shard is redone. Whether its part files still hold what it vouches for is
checked before the table is published (``verify.py``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from img_search.pipeline.state.state_files import load_json, warn_once

SUFFIX = ".parquet"


def part_prefix(model: str, dataset: str, shard: int) -> str:
    return f"part-{model}-{dataset}-{shard:06d}-"


def part_name(model: str, dataset: str, shard: int, generation: int, number: int) -> str:
    """The name of a shard's ``number``-th part, written under claim ``generation``."""
    return f"{part_prefix(model, dataset, shard)}{generation:02d}-{number:03d}{SUFFIX}"


@dataclass(frozen=True)
class PartRef:
    """One part file as its commit left it."""

    name: str
    rows: int
    size: int
    sha256: str


@dataclass
class CompletionRecord:
    model: str
    dataset: str
    shard: int
    start: int
    stop: int
    label: str = ""
    #: Position ranges done, merged.
    done: list[list[int]] = field(default_factory=list)
    final: bool = False
    rows: int = 0
    parts: list[PartRef] = field(default_factory=list)
    #: (item id, reason) of the items that failed, then the source's build-time problems.
    errors: list[list[str]] = field(default_factory=list)
    #: How many of ``errors`` are build-time problems of the source (not positions).
    problems: int = 0
    #: Positions done that held no item (a stream's skipped rows).
    skipped: int = 0
    owner: str | None = None
    generation: int = 0

    @property
    def positions_done(self) -> int:
        return sum(stop - start for start, stop in self.done)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompletionRecord:
        """The record in ``data``; ``ValueError``/``TypeError``/``KeyError`` if it is not one."""
        parts = [PartRef(**part) for part in data["parts"]]
        record = cls(**{**data, "parts": parts})
        for name, kind in _TYPES.items():
            value = getattr(record, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise TypeError(f"{name} is {value!r}")
        for part in parts:
            if not (isinstance(part.name, str) and isinstance(part.sha256, str)):
                raise TypeError(f"a part is {part!r}")
            if not all(isinstance(v, int) and v >= 0 for v in (part.rows, part.size)):
                raise TypeError(f"a part is {part!r}")
        record.done = [[int(a), int(b)] for a, b in record.done]
        record.errors = [[str(i), str(r)] for i, r in record.errors]
        return record

    def problem(self, model: str, dataset: str, shard: int) -> str | None:
        """Why this record cannot be the one of ``shard`` of (``model``, ``dataset``); None if it can."""
        if (self.model, self.dataset, self.shard) != (model, dataset, shard):
            return f"it is the record of shard {self.shard} of {self.model} × {self.dataset}"
        prefix = part_prefix(model, dataset, shard)
        for part in self.parts:
            if not _plain(part.name):
                return f"it names a part outside the job folder ({part.name!r})"
            if not (part.name.startswith(prefix) and part.name.endswith(SUFFIX)):
                return f"it names a part of another shard ({part.name})"
        if len({p.name for p in self.parts}) != len(self.parts):
            return "it names a part twice"
        if any(not self.start <= a <= b <= self.stop for a, b in self.done):
            return f"its positions done {self.done} are not within {self.start}-{self.stop}"
        if self.rows != sum(p.rows for p in self.parts):
            return f"it says {self.rows} rows and its parts {sum(p.rows for p in self.parts)}"
        accounted = self.rows + len(self.errors) - self.problems + self.skipped
        if accounted != self.positions_done or not 0 <= self.problems <= len(self.errors):
            return (
                f"{self.rows} rows, {len(self.errors) - self.problems} errors and {self.skipped} "
                f"empty positions are not the {self.positions_done} positions it says are done"
            )
        return None


_TYPES: dict[str, type] = {
    "model": str,
    "dataset": str,
    "shard": int,
    "start": int,
    "stop": int,
    "label": str,
    "done": list,
    "final": bool,
    "rows": int,
    "errors": list,
    "problems": int,
    "skipped": int,
    "generation": int,
}


def _plain(name: str) -> bool:
    """A file name of the job folder itself: no folder, no link up, nothing hidden."""
    return (
        bool(name)
        and Path(name).name == name
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
    )


def load_record(path: Path, model: str, dataset: str, shard: int) -> CompletionRecord | None:
    """The usable record at ``path``; None if there is none, or one that is not usable (named)."""
    data, reason = load_json(path)
    if data is None and reason is None:
        return None
    try:
        record = CompletionRecord.from_json(data or {})
    except (KeyError, TypeError, ValueError) as exc:
        reason = (
            reason or f"not a completion record of this img_search ({type(exc).__name__}: {exc})"
        )
    else:
        reason = record.problem(model, dataset, shard)
        if reason is None:
            return record
    warn_once(path, f"{reason}; shard {shard} of {model} × {dataset} is redone")
    return None


def unusable(path: Path, model: str, dataset: str, shard: int) -> bool:
    """A record file is there, and is not usable."""
    return path.is_file() and load_record(path, model, dataset, shard) is None
