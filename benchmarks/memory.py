"""Peak memory of a running command, sampled every 50 ms (shared by the benchmarks)."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class Peaks:
    """Peak RSS of the top process, of its anonymous part, and of the whole tree (bytes)."""

    main: int = 0
    anon: int = 0
    tree: int = 0
    #: (seconds since start, main-process RSS in MiB), every sample.
    samples: list[tuple[float, float]] = field(default_factory=list)


@contextlib.contextmanager
def sampled(pid: int, every_s: float = 0.05):
    """Sample ``pid`` and its children until the ``with`` block ends; yields the ``Peaks``."""
    main = psutil.Process(pid)
    peaks = Peaks()
    started = time.perf_counter()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                memory = main.memory_info()
                tree = memory.rss
                for child in main.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        tree += child.memory_info().rss
                peaks.main = max(peaks.main, memory.rss)
                peaks.anon = max(peaks.anon, memory.rss - getattr(memory, "shared", 0))
                peaks.tree = max(peaks.tree, tree)
                peaks.samples.append((time.perf_counter() - started, memory.rss / 2**20))
            except psutil.Error:
                pass
            time.sleep(every_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        done.set()
        thread.join()
