"""Dataset base classes: sources of raw items with stable ids, knowing nothing of models."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ImageItem:
    """One image as a dataset holds it: decoding happens later, in a loader worker."""

    id: str
    source: Any  # bytes | path | {"bytes", "path"} dict | PIL image


class ImageDataset(ABC):
    """A collection of images with stable, unique ids.

    Life cycle: construct from config (cheap, no I/O) → ``build()`` (downloads,
    listing, de-duplication; called on the main process first, then on the
    other ranks, which then read from the cache) → ``length()`` and iteration.

    Datasets with ``random_access = True`` also implement ``get(position)`` so
    that each rank reads only its own shard; streaming datasets are iterated
    and every rank skips the positions that are not its own.
    """

    #: The registry name; set by subclasses.
    kind: ClassVar[str] = ""
    random_access: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def build(self) -> None:
        """Fetch and index the data. Must be idempotent and safe to call on every rank."""

    @abstractmethod
    def length(self) -> int | None:
        """Number of distinct items, or None when a stream does not know it."""

    def get(self, position: int) -> ImageItem:
        raise NotImplementedError(f"{type(self).__name__} has no random access")

    def __iter__(self) -> Iterator[ImageItem]:
        n = self.length()
        if n is None:
            raise NotImplementedError(f"{type(self).__name__} must implement __iter__")
        for position in range(n):
            yield self.get(position)

    def describe(self) -> dict[str, Any]:
        """What to record in the output's metadata about this source."""
        return {"kind": self.kind}
