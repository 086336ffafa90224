"""What a dead loader worker left: the receiving thread, the exit codes, and the one exception."""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any


class Receiver:
    """Takes batches off a DataLoader iterator on a thread, while the model works on the last one.

    Receiving a batch from a worker (unpickling it, fetching its tensors'
    shared memory from the worker) costs the main thread 1-3 ms, during
    which the device would idle; PyTorch's own pin-memory thread does the
    same, but only on CUDA. The thread holds at most ``depth`` batches, and
    an exception of the iterator (a dead worker) is raised by ``next`` in
    the caller's thread, in order.
    """

    _END = object()

    def __init__(self, iterator: Iterator[Any], depth: int) -> None:
        self._iterator = iterator
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._receive, name="img_search-receiver", daemon=True
        )
        self._thread.start()

    def _receive(self) -> None:
        while not self._stopping.is_set():
            try:
                item: Any = next(self._iterator)
            except StopIteration:
                item = self._END
            except BaseException as exc:  # raised in the caller's thread by next()
                item = exc
            while not self._stopping.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item is self._END or isinstance(item, BaseException):
                return

    def next(self) -> Any:
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self, timeout: float = 10.0) -> None:
        """Let the thread finish the receive it is in (the iterator is shut down after it)."""
        self._stopping.set()
        self._thread.join(timeout=timeout)


class WorkerDied(Exception):
    """A loader worker ended without an exception of its own (killed, crashed, out of memory)."""

    def __init__(self, message: str, codes: list[int]) -> None:
        super().__init__(message)
        self.codes = codes

    @property
    def reason(self) -> str:
        signals = sorted({signal.Signals(-c).name for c in self.codes if c < 0})
        if signals:
            return f"the loader worker was killed by {', '.join(signals)} (out of memory?)"
        return "the loader worker exited unexpectedly (out of memory, or a crash in a decoder)"


def exit_codes(iterator: Any, wait_s: float = 0.0) -> list[int]:
    """The exit codes of the iterator's dead workers (a private attribute of PyTorch's, if there);
    ``wait_s``: how long to wait for a death that is known to have happened to show."""
    deadline = time.monotonic() + wait_s
    while True:
        codes = []
        for worker in getattr(iterator, "_workers", None) or []:
            with contextlib.suppress(Exception):
                if not worker.is_alive():
                    worker.join(timeout=1)  # reaped, so its exit code is known
                    codes.append(worker.exitcode)
        codes = [code for code in codes if code]
        if codes or time.monotonic() >= deadline:
            return codes
        time.sleep(0.05)


def deaths_only_in_next() -> None:
    """Make a worker's death surface in ``next(iterator)``, never in the middle of a commit.

    PyTorch installs a SIGCHLD handler that raises wherever the main thread
    happens to be; without it the loader notices a dead worker itself, within
    seconds, while waiting for its next batch.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
