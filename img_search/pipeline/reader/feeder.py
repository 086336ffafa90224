"""Claims on demand for the loader workers: the main thread claims, the workers ask.

A worker that has walked every shard claimed so far asks for the next one;
the main thread claims it (``state/claims.py``) and every worker sees the same
sequence of claimed shards, so windows are cut the same way in all of them.

Each worker asks through a pipe of its own. A queue shared by the workers
has one write lock between them, and a worker that ends at the wrong moment
(killed mid-request, or exiting right after its last answer while its queue
thread still holds the lock) keeps it for good: every other worker then
waits forever. With a pipe each, a worker that ends however it ends leaves
the others' pipes as they were.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from img_search.pipeline.reader.stream import windows
from img_search.pipeline.state.claims import ShardTask


class Feeder:
    """The shards this process claimed, in order; the ``k``-th is claimed when first asked for.

    Loader workers ask through a pipe each, answered by a thread of the main
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
        #: The main process's end of each loader worker's pipe, and the worker's end.
        self._mine: list[Connection] = []
        self._theirs: list[Connection] = []
        self._wake: tuple[Connection, Connection] | None = (
            None  # stop() wakes the thread through it
        )
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
        """Answer the requests of ``workers`` loader workers (started after this) on a thread."""
        pipes = [context.Pipe() for _ in range(workers)]
        self._mine, self._theirs = [m for m, _ in pipes], [w for _, w in pipes]
        self._wake = context.Pipe(duplex=False)
        self._thread = threading.Thread(
            target=self._answer,
            args=([*self._mine, self._wake[0]],),
            name="img_search-feeder",
            daemon=True,
        )
        self._thread.start()

    def _answer(self, pipes: list[Connection]) -> None:
        assert self._wake is not None
        while pipes:
            for pipe in wait(pipes):
                assert isinstance(pipe, Connection)
                if pipe is self._wake[0]:
                    return
                try:
                    k = pipe.recv()
                    try:
                        answer: Any = self.task(k)
                    except Exception as exc:  # reaches the worker, which raises it in the loader
                        answer = exc
                    # the windows as cut at the claim: the task's record grows as the shard
                    # commits, and windows cut from it later would be numbered otherwise
                    pipe.send(answer)
                except (EOFError, OSError):  # that worker is gone
                    pipes.remove(pipe)

    def stop(self) -> None:
        busy = False
        if self._thread is not None and self._wake is not None:
            self._wake[1].send(None)
            self._thread.join(timeout=10)
            # still inside a claim (waiting out a silent owner's lease): its pipes stay open
            # until it answers and sees the wake-up; the claim it makes is kept in ``tasks``
            busy = self._thread.is_alive()
        if not busy:
            for pipe in (*self._mine, *self._theirs, *(self._wake or ())):
                pipe.close()
        self._thread = None
        self._mine, self._theirs, self._wake = [], [], None

    def ask(self, worker: int | None, k: int) -> tuple[ShardTask, list[tuple[int, int]]] | None:
        """From a loader worker (``worker`` ≥ 0) through its pipe, else directly."""
        if worker is None or not self._theirs:
            return self.task(k)
        pipe = self._theirs[worker]
        pipe.send(k)
        while not pipe.poll(5):
            if os.getppid() == 1:  # the main process is gone
                return None
        answer = pipe.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_claim=None, _lock=None, _thread=None, _wake=None, _mine=[])
        state.update(tasks=[], windows=[])
        return state
