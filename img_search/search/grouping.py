"""Caption hits grouped by image: each image once, at the rank of its best caption.

A caption table holds several captions per image (Flickr30k: five), so a
text query's top k often shows one image k times over. Grouped, a search
asks the index for more hits than k, keeps each image's hits together (best
first) and orders the images by their best score, until k distinct images
are found or the whole index was asked. ``img-search query group=image``,
``Table.search(group_by_image=True)`` and the page (its default for caption
tables) share this one function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Hits asked for at first, per image wanted (Flickr30k has five captions per image).
FIRST_ASK = 5
#: How much more to ask for each time too few distinct images came back.
GROWTH = 4


def best_per_image(
    top_k: Callable[[int], list[T]],
    k: int,
    image_of: Callable[[T], str | None],
    most: int,
) -> list[list[T]]:
    """The hits of the ``k`` best images, one list per image (its hits best first), best first.

    ``top_k(n)``: the ``n`` best hits, best first; ``image_of(hit)``: its image
    (None: a hit of its own); ``most``: the most hits the index can give.
    """
    ask = min(most, k * FIRST_ASK)
    while True:
        found = top_k(ask)
        groups: dict[object, list[T]] = {}
        for number, hit in enumerate(found):
            image = image_of(hit)
            groups.setdefault(number if image is None else ("image", image), []).append(hit)
        if len(groups) >= k or ask >= most or len(found) < ask:
            return list(groups.values())[:k]  # dicts keep insertion order: by best score
        ask = min(most, ask * GROWTH)
