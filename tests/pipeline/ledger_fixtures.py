"""Job-state helpers the state tests share: a joined ledger, and the process file of a dead process."""

from __future__ import annotations

import json
from pathlib import Path

from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.liveness import here


def make_ledger(state: Path, lease_s: float = 120.0) -> Ledger:
    ledger = Ledger(state, lease_s)
    ledger.join("spec", "launch", rank=0)
    return ledger


def dead_here(host: str) -> str:
    """The process file of a process of this boot and PID namespace that has exited."""
    return json.dumps({"id": "vm-dead", "host": host, "pid": 999999, "started": "1", **here()})
