"""Small JPEGs of items, made from the dataset's own image on first request, then cached."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from PIL import Image

from img_search.data import open_image
from img_search.serve.catalog import LoadedTable


class ThumbnailCache:
    """LRU of encoded thumbnails (bytes), keyed by (table, item id)."""

    def __init__(self, size: int = 256, capacity: int = 4096, max_pixels: int | None = None):
        self.size, self.capacity, self.max_pixels = size, capacity, max_pixels
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.made = 0  # thumbnails encoded (not served from the cache)

    def get(self, table: LoadedTable, item_id: str) -> bytes:
        """The thumbnail, or UnknownItem / LookupError when the item or its image is unknown."""
        key = (table.name, item_id)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if table.images is None:
            raise LookupError(f"table {table.name} has no readable image source for thumbnails")
        data = self.encode(open_image(table.images.source(item_id), max_pixels=self.max_pixels))
        with self._lock:
            self._cache[key] = data
            self.made += 1
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return data

    def encode(self, image: Image.Image) -> bytes:
        image.thumbnail((self.size, self.size), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()
