"""Count the torch.distributed collectives a module makes, then run it: a wrapper for ``torchrun``.

    torchrun --nproc_per_node 4 benchmarks/collective_probe.py img_search.pipeline.embed <hydra overrides>

Before running the module (``runpy``, as ``python -m`` would) it wraps the
collectives of ``torch.distributed`` (in both ``torch.distributed`` and
``torch.distributed.distributed_c10d``, which is where the object collectives
look up the tensor ones). Per process it counts

  - top-level calls: what the program called (``all_gather_object`` is one);
  - tensor-level calls: every tensor collective, including the ones an object
    collective makes inside (``all_gather_object`` = two ``all_gather``);
  - bytes: ``numel() × element_size()`` of the distinct tensors each
    tensor-level call is handed (inputs and output buffers), i.e. the memory a
    rank puts through collectives; barriers count 0.

At exit (normal, ``sys.exit``, or an exception) each process writes
``$PROBE_DIR/rank-<RANK>.json`` (nothing when ``PROBE_DIR`` is unset) with the
counts, the process's wall time, and which ``img_search`` it imported.

If the imported ``img_search`` has no ``simulated`` encoder (an older tree,
run with ``PYTHONPATH=<old checkout>``), the class is loaded from this
repository's ``img_search/embedding/simulated.py`` (or ``$PROBE_SIMULATED_FILE``)
and added to ``img_search.embedding.ENCODERS``, so both trees can run the same
sleeping model (``+models.simulated.model=simulated ...``).
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import os
import runpy
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

STARTED_WALL = time.time()
STARTED = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]

TENSOR_OPS = (
    "all_gather",
    "all_gather_into_tensor",
    "broadcast",
    "all_reduce",
    "reduce",
    "gather",
    "scatter",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "all_to_all",
    "all_to_all_single",
    "barrier",
    "monitored_barrier",
    "send",
    "recv",
    "isend",
    "irecv",
)
OBJECT_OPS = (
    "all_gather_object",
    "broadcast_object_list",
    "gather_object",
    "scatter_object_list",
    "send_object_list",
    "recv_object_list",
)


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.local = threading.local()
        #: op → {"top": n, "nested": n, "bytes": n, "seconds": s}
        self.ops: dict[str, dict[str, float]] = {}

    def entry(self, name: str) -> dict[str, float]:
        return self.ops.setdefault(name, {"top": 0, "nested": 0, "bytes": 0, "seconds": 0.0})

    def summary(self) -> dict[str, Any]:
        with self.lock:
            ops = {k: dict(v) for k, v in sorted(self.ops.items())}
        return {
            "top_level_calls": int(sum(v["top"] for v in ops.values())),
            "tensor_calls": int(
                sum(v["top"] + v["nested"] for k, v in ops.items() if k in TENSOR_OPS)
            ),
            "nested_calls": int(sum(v["nested"] for v in ops.values())),
            "bytes": int(sum(v["bytes"] for v in ops.values())),
            "collective_seconds": round(sum(v["seconds"] for v in ops.values()), 4),
            "ops": ops,
        }


COUNTER = Counter()


def tensor_bytes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Bytes of the distinct tensors among the arguments (lists of tensors included)."""
    import torch

    seen: set[int] = set()
    total = 0

    def visit(value: Any, depth: int = 0) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            if id(value) not in seen:
                seen.add(id(value))
                total += value.numel() * value.element_size()
        elif isinstance(value, (list, tuple)) and depth < 2:
            for v in value:
                visit(v, depth + 1)

    for value in (*args, *kwargs.values()):
        visit(value)
    return total


def wrap(name: str, original: Any, tensor_level: bool) -> Any:
    @functools.wraps(original)
    def counted(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(COUNTER.local, "depth", 0)
        size = tensor_bytes(args, kwargs) if tensor_level else 0
        with COUNTER.lock:
            e = COUNTER.entry(name)
            e["top" if depth == 0 else "nested"] += 1
            e["bytes"] += size
        COUNTER.local.depth = depth + 1
        tick = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            COUNTER.local.depth = depth
            if depth == 0:
                with COUNTER.lock:
                    COUNTER.entry(name)["seconds"] += time.perf_counter() - tick

    counted.__probe_original__ = original  # type: ignore[attr-defined]
    return counted


def install() -> list[str]:
    """Wrap every known collective in both namespaces (the same wrapper object in each)."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    patched = []
    for names, tensor_level in ((TENSOR_OPS, True), (OBJECT_OPS, False)):
        for name in names:
            original = getattr(c10d, name, None) or getattr(dist, name, None)
            if original is None or hasattr(original, "__probe_original__"):
                continue
            wrapper = wrap(name, original, tensor_level)
            for module in (dist, c10d):
                if getattr(module, name, None) is original:
                    setattr(module, name, wrapper)
            patched.append(name)
    return patched


def register_simulated() -> str | None:
    """Add the simulated encoder to an ``img_search`` that lacks it; returns where it came from."""
    import img_search.embedding as embedding

    if "simulated" in embedding.ENCODERS:
        return None
    path = Path(
        os.environ.get("PROBE_SIMULATED_FILE") or REPO / "img_search/embedding/simulated.py"
    )
    spec = importlib.util.spec_from_file_location("img_search.embedding.simulated", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the simulated encoder from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # picklable for loader workers
    spec.loader.exec_module(module)
    embedding.ENCODERS["simulated"] = module.SimulatedEncoder
    return str(path)


class Report:
    def __init__(self, module: str, patched: list[str]) -> None:
        self.module, self.patched = module, patched
        self.written = False
        self.exit_code: Any = None
        self.simulated_from: str | None = None

    def write(self) -> None:
        if self.written:
            return
        self.written = True
        folder = os.environ.get("PROBE_DIR")
        if not folder:
            return
        rank = os.environ.get("RANK", "0")
        img_search = sys.modules.get("img_search")
        data = {
            "rank": int(rank),
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "module": self.module,
            "argv": sys.argv[1:],
            "exit_code": self.exit_code,
            "started": STARTED_WALL,
            "ended": time.time(),
            "wall_s": round(time.perf_counter() - STARTED, 4),
            "img_search_file": getattr(img_search, "__file__", None),
            "simulated_registered_from": self.simulated_from,
            "patched": self.patched,
            **COUNTER.summary(),
        }
        Path(folder).mkdir(parents=True, exist_ok=True)
        target = Path(folder) / f"rank-{rank}.json"
        temporary = target.with_suffix(f".json.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, indent=1))
        os.replace(temporary, target)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    module = sys.argv[1]
    patched = install()
    report = Report(module, patched)
    atexit.register(report.write)
    report.simulated_from = register_simulated()
    sys.argv = [module, *sys.argv[2:]]  # runpy replaces argv[0] with the module's file
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        report.exit_code = 0
    except SystemExit as exc:
        report.exit_code = exc.code if exc.code is not None else 0
        raise
    except BaseException as exc:
        report.exit_code = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        report.write()


if __name__ == "__main__":
    main()
