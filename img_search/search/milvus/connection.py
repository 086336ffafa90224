"""Connections to Milvus: one client per index, and the Milvus Lite folders this process serves.

The same client (``pymilvus.MilvusClient``) reaches Milvus Lite, a local
``.db`` folder served by a thread of this process, or a Milvus server or
cluster (``http://host:19530``, a token). pymilvus is imported on the first
connection: it is an optional extra (``img_search[milvus]``). Milvus Lite
serves one process at a time, so a folder another process holds is refused
in one line, and the last index of this process on a folder stops its
server thread (``_LITE_OPEN`` counts them: one object for the process).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

INSTALL = "pip install 'img_search[milvus]'"
#: Milvus Lite folders this process serves, by path, with how many indexes use each.
_LITE_OPEN: Counter[str] = Counter()


class MilvusError(ValueError):
    """Milvus cannot be used as asked: not installed, unreachable, a collection gone. One line."""


def is_lite(uri: str) -> bool:
    return not re.match(r"^(https?|tcp|unix):", uri, re.IGNORECASE)


def check_uri(uri: str | None) -> None:
    if uri is None:
        return
    if is_lite(str(uri)) and not str(uri).endswith(".db"):
        raise MilvusError(
            f"milvus uri {uri!r} is neither a server (http://host:19530) nor a Milvus Lite "
            "file (a path ending in .db)"
        )


def check_installed(lite: bool) -> None:
    missing = [p for p in ("pymilvus", "milvus_lite")[: 1 + lite] if not _importable(p)]
    if missing:
        raise MilvusError(
            f"index kind milvus needs {' and '.join(m.replace('_', '-') for m in missing)}: "
            f"{INSTALL}"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a spec (or set to None): not usable
        return False


def _quiet_client_logs() -> None:
    """pymilvus logs every failed call with its own traceback, and Milvus Lite's in-process gRPC
    server each call it does not implement (pymilvus asks it for timestamps): the error we raise
    says what matters, once."""
    for name in ("pymilvus", "milvus_lite", "grpc._server"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _lite_held_elsewhere(path: str) -> bool:
    """Whether another process has this Milvus Lite folder open (it takes an exclusive lock)."""
    try:
        import fcntl
    except ImportError:  # not Unix: Milvus Lite's own error says it
        return False
    lock = Path(path) / "LOCK"
    if _LITE_OPEN[path] or not lock.exists():
        return False
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def connect(uri: str, token: str | None, timeout: float) -> Any:
    """A ``MilvusClient`` for ``uri``, or one line saying why there is none (within ``timeout`` s)."""
    lite = is_lite(uri)
    check_installed(lite)
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    _quiet_client_logs()
    if lite:
        uri = os.path.abspath(uri)
        if _lite_held_elsewhere(uri):
            raise MilvusError(
                f"the Milvus Lite file {uri} is open in another process: Milvus Lite serves one "
                "process at a time; stop that one, or load the vectors into a Milvus server "
                "(indexes.milvus.uri=http://host:19530) that several processes can share"
            )
    try:
        client = MilvusClient(uri=uri, token=token or "", timeout=timeout)
    except MilvusException as exc:
        what = "open the Milvus Lite file" if lite else f"reach Milvus within {timeout:g} s at"
        raise MilvusError(f"cannot {what} {uri}: {exc.message}") from None
    if lite:
        _LITE_OPEN[uri] += 1
    return client


def disconnect(client: Any, uri: str) -> None:
    client.close()
    if is_lite(uri):
        uri = os.path.abspath(uri)
        _LITE_OPEN[uri] -= 1
        if _LITE_OPEN[uri] <= 0:  # the last index of this process on it: stop its server thread
            del _LITE_OPEN[uri]
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)
