"""Reading the job's state files, which live on shared filesystems that other tools and people touch.

A state file that is not what this job writes (a JSON list, a truncated
object, bytes that are not UTF-8) never stops a run: it is named once in a
warning and read as absent, so the work it stood for is done again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: (path, size, mtime) of the state files already named in a warning, so that a file read in a
#: loop is named once; a file replaced since is named again.
_warned: set[tuple[str, int, int]] = set()
_JSON_TYPES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
_JSON_TYPES[type(None)] = "null"


def warn_once(path: Path, message: str) -> None:
    """``<path>: <message>``, once for this version of the file."""
    try:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = (str(path), -1, -1)
    if key in _warned:
        return
    _warned.add(key)
    log.warning("%s: %s", path, message)


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is absent or holds anything else (named once)."""
    data, problem = load_json(Path(path))
    if problem:
        warn_once(Path(path), f"{problem}: ignored")
    return data


def load_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object in ``path``, None), (None, None) if absent, or (None, why it is not one)."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not a readable JSON object ({_why(exc)})"
    if not isinstance(data, dict):
        return None, f"holds a JSON {_JSON_TYPES.get(type(data), 'value')}, not an object"
    return data, None


def _why(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at byte {exc.pos}" if exc.doc else "empty"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 at byte {exc.start}"
    return type(exc).__name__
