"""Rank logic in one place: the Accelerator, build-on-main-first with retries, and gathering.

Work is sharded by position (item ``p`` belongs to rank ``p % world``), every
rank steps through its own loader, and at every step all ranks gather what
they produced, with a ``done`` flag, until every rank is done. So each item is
embedded by exactly one rank exactly once, whatever the number of items,
processes or loader workers — without Accelerate's ``gather_for_metrics``
padding and de-padding heuristics.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list, gather_object

log = logging.getLogger(__name__)
T = TypeVar("T")


class BuildError(RuntimeError):
    """A model or dataset could not be built; raised on every rank so none waits forever."""


class PeerLost(RuntimeError):
    """Another rank died or a collective timed out; the run stops instead of hanging."""


#: What a collective raises when a peer is gone (gloo: RuntimeError; NCCL: DistBackendError).
PEER_ERRORS: tuple[type[BaseException], ...] = (
    getattr(torch.distributed, "DistBackendError", RuntimeError),
    getattr(torch.distributed, "DistNetworkError", RuntimeError),
    RuntimeError,
)


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a failed collective (a peer died, or the timeout passed) into ``PeerLost``."""
    try:
        yield
    except PEER_ERRORS as exc:
        if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
            raise
        raise PeerLost(
            f"another process of this job stopped or timed out during {what} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "finished parts are kept: rerun the same command to resume"
        ) from exc


def make_accelerator(cpu: bool = False, timeout_s: float = 1800.0) -> Accelerator:
    """One Accelerator per job. ``cpu=True`` (or ``ACCELERATE_USE_CPU=1``) runs gloo ranks on CPU.

    ``timeout_s`` bounds every collective: if a rank dies, the others stop
    with an error after at most that long instead of waiting forever.
    """
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
        with collective("a broadcast from the main process"):
            result, message = broadcast_object_list([result, message], from_process=0)
        if error is None and message is not None:
            raise BuildError(message)
    if error is not None:
        raise error
    return result


def with_retries(build: Callable[[], T], what: str, retries: int, backoff: float) -> T:
    """Call ``build`` up to ``retries + 1`` times, sleeping ``backoff * 2**attempt`` in between.

    Errors that retrying cannot fix (a missing file, a bad option) fail at once.
    """
    for attempt in range(retries + 1):
        try:
            return build()
        except (FileNotFoundError, ValueError, KeyError, TypeError, NotImplementedError):
            raise
        except Exception as exc:
            if attempt == retries:
                raise
            delay = backoff * (2**attempt)
            log.warning(
                "building %s failed (%s); retry %d/%d in %.1fs",
                what,
                exc,
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
    retries: int = 3,
    backoff: float = 2.0,
) -> T:
    """Build on the main process first (it downloads and fills caches), then on the other ranks.

    A failure on any rank is re-raised on every rank as ``BuildError`` with the
    original message, instead of leaving the others blocked in a barrier.
    """
    result: Any = None
    error: str | None = None
    if accelerator.is_main_process:
        result, error = _attempt(build, what, retries, backoff)
    if accelerator.num_processes > 1:
        with collective(f"building {what}"):
            (error,) = broadcast_object_list([error], from_process=0)
    if error is not None:
        raise BuildError(error)
    if not accelerator.is_main_process:
        result, error = _attempt(build, what, retries, backoff)
    if accelerator.num_processes > 1:
        with collective(f"building {what}"):
            errors = [e for e in gather_object([error]) if e is not None]
        if errors:
            raise BuildError(errors[0])
    return result


def _attempt(
    build: Callable[[], T], what: str, retries: int, backoff: float
) -> tuple[Any, str | None]:
    try:
        return with_retries(build, what, retries, backoff), None
    except Exception as exc:  # reported on every rank by the caller
        log.debug("building %s failed", what, exc_info=True)
        return None, f"cannot build {what}: {exc}"


@dataclass
class StepResult:
    """Everything all ranks produced in one step, as seen by every rank."""

    ids: list[str] = field(default_factory=list)
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    vectors: np.ndarray | None = None  # (n, dim) float32, main process only
    failures: list[tuple[str, str]] = field(default_factory=list)
    all_done: bool = False


def gather_step(
    accelerator: Accelerator,
    ids: list[str],
    positions: list[int],
    vectors: torch.Tensor | None,
    failures: list[tuple[str, str]],
    done: bool,
) -> StepResult:
    """Collect one step of every rank; vectors travel as one padded tensor all-gather."""
    dim = None if vectors is None else int(vectors.shape[1])
    if accelerator.num_processes == 1:
        return StepResult(
            ids=list(ids),
            positions=np.asarray(positions, dtype=np.int64),
            vectors=None if vectors is None else vectors.float().cpu().numpy(),
            failures=list(failures),
            all_done=done,
        )
    with collective("gathering embeddings"):
        metas = gather_object([(list(ids), list(positions), list(failures), done, dim)])
    counts = [len(meta[0]) for meta in metas]
    dims = {meta[4] for meta in metas if meta[4] is not None}
    result = StepResult(all_done=all(meta[3] for meta in metas))
    for meta in metas:
        result.ids.extend(meta[0])
        result.failures.extend(meta[2])
    result.positions = np.asarray([p for meta in metas for p in meta[1]], dtype=np.int64)
    widest = max(counts)
    if widest == 0:
        return result
    if len(dims) != 1:
        raise RuntimeError(f"ranks produced vectors of different dimensions: {sorted(dims)}")
    (common_dim,) = dims
    padded = torch.zeros(widest, common_dim, dtype=torch.float32, device=accelerator.device)
    if vectors is not None and len(vectors):
        padded[: len(vectors)] = vectors.float()
    with collective("gathering embeddings"):
        everything = accelerator.gather(padded)
    if accelerator.is_main_process:
        blocks = everything.view(accelerator.num_processes, widest, common_dim)
        matrix = torch.cat([blocks[r, :n] for r, n in enumerate(counts)]).cpu().numpy()
        result.vectors = matrix
    return result


def finish(accelerator: Accelerator) -> None:
    """Without a last barrier and ``end_training`` about half of gloo runs abort at exit."""
    with collective("the final barrier"):
        accelerator.wait_for_everyone()
    accelerator.end_training()
