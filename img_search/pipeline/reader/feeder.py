"""Claims on demand for the loader workers: the main thread claims, the workers ask.

A worker that has walked every shard claimed so far asks for the next one;
the main thread claims it (``state/claims.py``) and every worker sees the same
sequence of claimed shards, so windows are cut the same way in all of them.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from img_search.pipeline.reader.stream import windows
from img_search.pipeline.state.claims import ShardTask


class Feeder:
    """The shards this process claimed, in order; the ``k``-th is claimed when first asked for.

    Loader workers ask through queues, answered by a thread of the main
    process, so claims (and their heartbeats) belong to the process that
    commits the shards.
    """

    def __init__(self, claim: Callable[[], ShardTask | None], batch_size: int) -> None:
        self._claim = claim
        self.batch_size = batch_size
        self.tasks: list[ShardTask] = []
        self.windows: list[list[tuple[int, int]]] = []
        self.exhausted = False
        self._lock = threading.Lock()
        self._requests: Any = None
        self._answers: list[Any] = []
        self._thread: threading.Thread | None = None

    def task(self, k: int) -> tuple[ShardTask, list[tuple[int, int]]] | None:
        with self._lock:
            while len(self.tasks) <= k and not self.exhausted:
                task = self._claim()
                if task is None:
                    self.exhausted = True
                else:
                    self.tasks.append(task)
                    self.windows.append(windows(task, self.batch_size))
            if k < len(self.tasks):
                return self.tasks[k], self.windows[k]
            return None

    # -- serving loader workers ------------------------------------------------------
    def serve(self, workers: int, context: Any) -> None:
        self._requests = context.Queue()
        # A worker killed while sending a request (an OOM kill, a fault point) can die holding
        # this queue's write lock: whoever puts after it would wait for that lock at exit,
        # forever. What is left unsent at exit is not wanted, here or in the workers (``ask``).
        self._requests.cancel_join_thread()
        self._answers = [context.Queue() for _ in range(workers)]
        self._thread = threading.Thread(target=self._answer, name="img_search-feeder", daemon=True)
        self._thread.start()

    def _answer(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            worker, k = request
            try:
                self._answers[worker].put(self.task(k))
            except Exception as exc:  # reaches the worker, which raises it in the loader
                self._answers[worker].put(exc)

    def stop(self) -> None:
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def ask(self, worker: int | None, k: int) -> tuple[ShardTask, list[tuple[int, int]]] | None:
        """From a loader worker (``worker`` ≥ 0) through the queues, else directly."""
        if worker is None or self._requests is None:
            return self.task(k)
        self._requests.cancel_join_thread()  # (reset in each forked worker: see ``serve``)
        self._requests.put((worker, k))
        while True:
            try:
                answer = self._answers[worker].get(timeout=5)
                break
            except queue.Empty:
                if os.getppid() == 1:  # the main process is gone
                    return None
        if isinstance(answer, Exception):
            raise answer
        return answer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_claim=None, _lock=None, _thread=None, tasks=[], windows=[])
        return state
