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


class Source(ABC):
    """Items with stable, unique ids: the common shape of image and caption datasets.

    Life cycle: construct from config (cheap, no I/O) → ``build()`` (downloads,
    listing, de-duplication; called on the main process first, then on the
    other ranks, which then read from the cache) → ``length()`` and iteration.

    Sources with ``random_access = True`` implement ``get(position)`` so that
    each rank reads only its own shard; streaming sources are iterated and
    every rank skips the positions that are not its own.
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

    def get(self, position: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no random access")

    def __iter__(self) -> Iterator[Any]:
        n = self.length()
        if n is None:
            raise NotImplementedError(f"{type(self).__name__} must implement __iter__")
        for position in range(n):
            yield self.get(position)

    def problems(self) -> list[tuple[str, str]]:
        """Input found unusable while building (where, why); reported with the item errors."""
        return []

    def describe(self) -> dict[str, Any]:
        """What to record in the output's metadata about this source."""
        return {"kind": self.kind}


class ImageDataset(Source):
    """A collection of images; ``get``/iteration yield ``ImageItem`` (id + undecoded source)."""

    def get(self, position: int) -> ImageItem:
        return super().get(position)

    def item_ids(self) -> list[str]:
        """Every item id in position order (after ``build``), to find an item by id.

        Sources that know their ids without reading the images override this.
        """
        return [item.id for item in self]
