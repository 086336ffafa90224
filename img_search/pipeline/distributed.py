"""The few moments the processes of one launch meet: building (main process first) and the end.

Processes exchange no vectors and no ids; each commits its own shards
through the filesystem (``claims``, ``commit``). What remains collective is a
constant number of calls per model and dataset — broadcasting a build error
or a decision of the main process, and a last gather of statistics — which
``collective`` counts, so a run can show that coordination does not grow
with the data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list, gather_object

from img_search.failures import BuildError, PeerLost, first_line, hub_unavailable, is_transient
from img_search.pipeline.engines.slurm import stray_mpi_world

log = logging.getLogger(__name__)
T = TypeVar("T")


#: What a collective raises when a peer is gone (gloo: RuntimeError; NCCL: DistBackendError).
PEER_ERRORS: tuple[type[BaseException], ...] = (
    getattr(torch.distributed, "DistBackendError", RuntimeError),
    getattr(torch.distributed, "DistNetworkError", RuntimeError),
    RuntimeError,
)


@dataclass
class CollectiveCount:
    calls: int = 0
    bytes: int = 0


#: Collective calls this process made (and the pickled bytes it sent) since it started.
COUNT = CollectiveCount()


@contextlib.contextmanager
def collective(what: str, payload: Any = None) -> Iterator[None]:
    """Count one collective call; a failed one (a peer died, or the timeout passed) becomes ``PeerLost``."""
    COUNT.calls += 1
    if payload is not None:
        COUNT.bytes += len(pickle.dumps(payload))
    try:
        yield
    except PEER_ERRORS as exc:
        if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
            raise
        raise PeerLost(
            f"another process of this job stopped or timed out during {what} "
            f"({type(exc).__name__}: {first_line(str(exc))}); "
            "committed shards are kept: rerun the same command to resume"
        ) from exc


def make_accelerator(cpu: bool = False, timeout_s: float = 1800.0) -> Accelerator:
    """One Accelerator per job. ``cpu=True`` (or ``ACCELERATE_USE_CPU=1``) runs gloo ranks on CPU.

    ``timeout_s`` bounds every collective: if a rank dies, the others stop
    with an error after at most that long instead of waiting forever. MPI
    world sizes that no torch world goes with (``srun``'s, see
    ``engines.stray_mpi_world``) are dropped first: this process runs alone.
    """
    for name in stray_mpi_world():
        log.info(
            "%s=%s without MASTER_ADDR or a torch launcher: this process is a launch of its own "
            "(start several per task with torchrun or accelerate launch)",
            name,
            os.environ.pop(name),
        )
    handler = InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))
    return Accelerator(cpu=cpu, kwargs_handlers=[handler])


def on_main(accelerator: Accelerator, work: Callable[[], T]) -> T:
    """Run ``work`` on the main process only and give every rank its result.

    An exception on the main process is re-raised there and raised as
    ``BuildError`` with the same message on the other ranks.
    """
    result: Any = None
    error: BaseException | None = None
    if accelerator.is_main_process:
        try:
            result = work()
        except Exception as exc:
            error = exc
    if accelerator.num_processes > 1:
        message = None if error is None else str(error)
        payload = [result, message]
        with collective("a broadcast from the main process", payload):
            result, message = broadcast_object_list(payload, from_process=0)
        if error is None and message is not None:
            raise BuildError(message)
    if error is not None:
        raise error
    return result


def with_retries(
    build: Callable[[], T],
    what: str,
    retries: int,
    backoff: float,
    local_copy: str | None = None,
) -> T:
    """Call ``build`` up to ``retries + 1`` times, sleeping ``backoff * 2**attempt`` in between.

    Only transient errors are retried (``failures.is_transient``); anything
    retrying cannot fix fails at once. A Hub access that cannot work from
    here becomes one line naming ``local_copy``, the override that points
    the build at a local copy.
    """
    for attempt in range(retries + 1):
        try:
            return build()
        except Exception as exc:
            if attempt == retries or not is_transient(exc):
                explained = hub_unavailable(exc, local_copy)
                if explained is not None:
                    raise explained from exc
                raise
            delay = backoff * (2**attempt)
            log.warning(
                "building %s failed (%s); retry %d/%d in %.1fs",
                what,
                first_line(exc),
                attempt + 1,
                retries,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def build_everywhere(
    accelerator: Accelerator,
    build: Callable[[], T],
    what: str,
    *,
    together: bool = False,
    retries: int = 3,
    backoff: float = 2.0,
    local_copy: str | None = None,
) -> T:
    """Build on the main process first (it downloads and fills caches), then on the other ranks;
    with ``together``, on every rank at once (a build that shares its work: ``Source.builds_together``).

    A failure on any rank is re-raised on every rank as ``BuildError`` with the
    original message, instead of leaving the others blocked in a barrier.
    ``local_copy`` is the override that replaces a Hub id with a local copy,
    named in the message when the Hub cannot serve it.
    """
    result: Any = None
    error: str | None = None
    if together or accelerator.is_main_process:
        result, error = _attempt(build, what, retries, backoff, local_copy)
    if not together:
        if accelerator.num_processes > 1:
            with collective(f"building {what}", [error]):
                (error,) = broadcast_object_list([error], from_process=0)
        if error is not None:
            raise BuildError(error)
        if not accelerator.is_main_process:
            result, error = _attempt(build, what, retries, backoff, local_copy)
    if accelerator.num_processes > 1:
        with collective(f"building {what}", [error]):
            errors = [e for e in gather_object([error]) if e is not None]
        error = errors[0] if errors else None
    if error is not None:
        raise BuildError(error)
    return result


def _attempt(
    build: Callable[[], T], what: str, retries: int, backoff: float, local_copy: str | None
) -> tuple[Any, str | None]:
    try:
        return with_retries(build, what, retries, backoff, local_copy), None
    except Exception as exc:  # reported on every rank by the caller
        log.debug("building %s failed", what, exc_info=True)
        return None, f"cannot build {what}: {exc}"


def gather_to_main(accelerator: Accelerator, value: T) -> list[T]:
    """Every process's ``value``, in rank order, on every process (used once, at the end)."""
    if accelerator.num_processes == 1:
        return [value]
    with collective("gathering the run statistics", [value]):
        return gather_object([value])


def finish(accelerator: Accelerator) -> None:
    """Without a last barrier and ``end_training`` about half of gloo runs abort at exit."""
    if accelerator.num_processes > 1:
        with collective("the final barrier"):
            accelerator.wait_for_everyone()
    accelerator.end_training()


def local_world_size(accelerator: Accelerator) -> int:
    """Processes of this launch on this machine (torchrun and accelerate set LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
