"""Fail points for crash tests: the process kills itself with SIGKILL at a named point.

``IMG_SEARCH_FAULT=<point>[@<rank>][:<nth>]`` kills the process of rank
``<rank>`` (any rank if omitted) the ``<nth>`` time (default 1) it reaches
``<point>``. Unset — always, outside tests — this is a dictionary lookup.
Points: ``model_build``, ``step`` (after a batch's rows went to the part
file), ``commit`` (after a shard's completion record was written),
``finalize`` (the finished table written, not yet renamed into place),
``prepare/<item id>`` (a loader worker about to prepare that item; ``prepare/*``: any),
``milvus_batch`` (a batch of rows upserted into a Milvus collection).
"""

from __future__ import annotations

import fnmatch
import os
import signal

_reached: dict[str, int] = {}


def fail_point(point: str) -> None:
    spec = os.environ.get("IMG_SEARCH_FAULT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    name, _, rank = name.partition("@")
    if not fnmatch.fnmatchcase(point, name) or (rank and rank != os.environ.get("RANK", "0")):
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
