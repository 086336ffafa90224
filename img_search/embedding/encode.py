"""Items → vectors outside the pipeline, written once: the Python API, a query, evaluation, the server.

Each item goes through the steps a loader worker and the forward pass apply
(``Encoder.preparer``, ``collate``, ``forward``), in batches, so a vector
from here is the vector the pipeline writes for the same item in the same
batch. A bad item either stops the call (``on_error="raise"``: the first
``ItemFailure``, raised from its cause) or is left out and named
(``"skip"``); a side the model does not have is refused before any item is
read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from img_search.failures import first_line
from img_search.images import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from img_search.embedding.base import Encoder

Side = Literal["image", "text"]
OnError = Literal["raise", "skip"]
SIDES: tuple[str, ...] = ("image", "text")


class UnsupportedSide(ValueError):
    """The model has no tower for that side (text asked of an image-only model, or the reverse)."""


class ItemFailure(ValueError):
    """An item that cannot be encoded: its position in the input, why, and the exception behind it."""

    def __init__(
        self, index: int, reason: str, side: str = "image", cause: BaseException | None = None
    ) -> None:
        super().__init__(f"{side} {index}: {reason}")
        self.index, self.reason, self.side, self.cause = index, reason, side, cause


@dataclass
class Encoded:
    """The vectors of the items that worked, and the others.

    ``vectors[j]`` (float32, unit length) is the item ``indices[j]`` of the
    input; ``failures`` name the rest (empty unless ``on_error="skip"``).
    """

    vectors: np.ndarray
    indices: np.ndarray
    failures: list[ItemFailure] = field(default_factory=list)


@dataclass(frozen=True)
class Given:
    """One item handed to ``encode``, shaped as a dataset's item is for the pipeline's preparers."""

    source: Any = None  # an image: a path, the file's bytes, a PIL image
    text: str | None = None


def check_side(encoder: Encoder, side: str) -> None:
    """Refuse a side that is not one, or that this model does not have."""
    if side not in SIDES:
        raise ValueError(f"side must be 'image' or 'text', not {side!r}")
    if not encoder.has_side(side):
        raise UnsupportedSide(f"model {encoder.name!r} ({encoder.kind}) has no {side} side")


def encode(
    encoder: Encoder,
    items: Sequence[Any],
    *,
    side: Side,
    batch_size: int = 32,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    on_error: OnError = "raise",
    progress: bool = False,
) -> Encoded:
    """Images (paths, bytes, PIL images) or texts → ``Encoded``, ``batch_size`` items per forward pass."""
    check_side(encoder, side)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if isinstance(items, (str, bytes)):
        raise TypeError(
            f"encode takes a list of items; wrap a single one: [{type(items).__name__}]"
        )
    prepare, collate = encoder.preparer(side, max_pixels), encoder.collate(side)
    done: list[np.ndarray] = []
    kept: list[int] = []
    failures: list[ItemFailure] = []
    description = f"{encoder.name} × {side}s"
    for batch in batches(len(items), batch_size, progress, description):
        features = []
        for i in batch:
            try:
                features.append(prepare(given(items[i], side)))
                kept.append(i)
            except Exception as exc:  # decode errors come in many types (PIL, OSError, limits)
                failure = ItemFailure(i, reason(items[i], side, exc), side, exc)
                if on_error == "raise":
                    raise failure from exc
                failures.append(failure)
        if features:
            done.append(encoder.forward(side, collate(features)).float().cpu().numpy())
    return Encoded(stack(done, encoder.dim), np.asarray(kept, np.int64), failures)


def given(item: Any, side: str) -> Given:
    return Given(source=item) if side == "image" else Given(text=str(item))


def stack(done: list[np.ndarray], dim: int | None) -> np.ndarray:
    if done:
        return np.concatenate(done).astype(np.float32, copy=False)
    return np.zeros((0, dim or 0), np.float32)


def batches(n: int, size: int, progress: bool, description: str) -> Iterator[range]:
    """Positions ``0..n`` in runs of ``size``, with a progress bar (items/s) when asked and useful."""
    if size <= 0:
        raise ValueError(f"batch_size must be positive, got {size}")
    from img_search.console import make_progress

    with make_progress(enabled=progress and n > size) as bar:
        task = bar.add_task(description, total=n, rate="")
        for start in range(0, n, size):
            yield range(start, min(start + size, n))
            done = min(start + size, n)
            rate = done / max(bar.tasks[task].elapsed or 1e-9, 1e-9)
            bar.update(task, completed=done, rate=f"{rate:.1f} it/s")


def reason(item: Any, side: str, exc: BaseException) -> str:
    """Why an item failed, in one line: its file (an image path) or kind, the exception and its text."""
    if side == "image":
        label = os.fspath(item) if isinstance(item, (str, os.PathLike)) else type(item).__name__
        label += ": "
    else:
        label = ""
    first = first_line(str(exc))
    return f"{label}{type(exc).__name__}: {first}" if first else f"{label}{type(exc).__name__}"
