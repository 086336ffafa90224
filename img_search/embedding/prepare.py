"""What a loader worker does to one item before the model sees it: picklable, run outside the main process.

``Encoder.preparer`` gives these to the pipeline's loader workers and to
``Encoder.encode`` (the API, queries, evaluation, the server) alike, so a
vector from either is the vector of the same preprocessing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from img_search.images import open_image

if TYPE_CHECKING:
    from img_search.embedding.base import ImageTransform


class DecodeAndTransform:
    """Loader-worker step for images: decode to RGB (with the pixel limit), then the encoder's transform."""

    def __init__(self, transform: ImageTransform, max_pixels: int | None) -> None:
        self.transform, self.max_pixels = transform, max_pixels

    def __call__(self, item: Any) -> Any:
        image = open_image(item.source, self.max_pixels, resize_to=self.transform.resize_target)
        return self.transform(image)


class CaptionText:
    """Loader step for texts: the raw text; with ``require_text`` (captions, the pipeline's default),
    an empty one is an item error, not a vector."""

    def __init__(self, require_text: bool = True) -> None:
        self.require_text = require_text

    def __call__(self, item: Any) -> str:
        if self.require_text and (not item.text or not item.text.strip()):
            raise ValueError("empty caption")
        return item.text
