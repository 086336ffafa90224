"""Small JPEGs of items, made from the dataset's own image on first request, then cached.

The dataset a table was embedded from is rebuilt from its metadata, in the
background, once: thumbnails are a convenience, and no request waits for them.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from img_search.data import get_dataset
from img_search.data.base import ImageDataset
from img_search.data.limits import over_limit
from img_search.images import ImageDecodeError, open_image
from img_search.serve.queries import DecodeSlots
from img_search.store import read_metadata
from img_search.store.selection import UnknownItem

if TYPE_CHECKING:
    from img_search.serve.catalog import LoadedTable

log = logging.getLogger(__name__)

#: How long start-up waits for the image sources of thumbnails: a folder listing takes
#: milliseconds, a Hub dataset may take minutes and goes on in the background.
IMAGE_SOURCE_WAIT_S = 10.0


class SourceUnavailable(Exception):
    """A table's image source is still being built (``building``), or could not be built here."""

    def __init__(self, message: str, building: bool = False) -> None:
        super().__init__(message)
        self.building = building


class ItemImages:
    """The raw image of an item id in its dataset (folder file or Hub/Parquet bytes), for thumbnails.

    The dataset is built once, in a background thread started at load, so no
    request ever waits for a listing or a download. Until the build is done,
    and for good when it failed (the folder moved, a loop symlink, no Hub
    access), ``source`` raises ``SourceUnavailable``: the build is never retried
    per request. The reason is logged, not returned, since it may hold paths.
    """

    def __init__(self, table: str, dataset: ImageDataset | None, error: str | None = None) -> None:
        self.table, self.dataset, self.error = table, dataset, error
        self.ready = threading.Event()
        self._position: dict[str, int] | None = None
        if dataset is None:
            self.ready.set()

    def start(self) -> None:
        """Build the dataset in a daemon thread (a no-op for a source that could not be made)."""
        if not self.ready.is_set():
            threading.Thread(target=self._build, name=f"images-{self.table}", daemon=True).start()

    def _build(self) -> None:
        try:
            self.dataset.build()
            self._position = {str(i): p for p, i in enumerate(self.dataset.item_ids())}
        except Exception as exc:  # whatever it is, this table only loses its thumbnails
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "table %s: no thumbnails, dataset %s cannot be built here: %s",
                self.table,
                self.dataset.name,
                self.error,
            )
        finally:
            self.ready.set()

    def source(self, item_id: str, max_bytes: int | None = None) -> Any:
        """The item's image as its dataset holds it. One the dataset must read whole to give (a tar
        member) is refused over ``max_bytes`` (``ImageDecodeError``) before it is read, as an
        upload is; a file is opened lazily and held to the pixel limit alone."""
        if not self.ready.is_set():
            raise SourceUnavailable(
                f"the images of table {self.table} are still being prepared; retry in a moment",
                building=True,
            )
        if self._position is None:
            raise SourceUnavailable(
                f"the images of table {self.table} cannot be read on this server (its log says "
                "why); thumbnails of this table are off until the server restarts"
            )
        position = self._position.get(item_id)
        if position is None:
            raise UnknownItem(f"no image {item_id!r} in the dataset of table {self.table}")
        size = self.dataset.image_bytes(position)
        if max_bytes is not None and size is not None and size > max_bytes:
            raise ImageDecodeError(over_limit("the image", size, max_bytes, "max_upload_bytes"))
        return self.dataset.get(position).source


def item_images_of(name: str, table: Path, dataset_name: str) -> ItemImages | None:
    """The dataset an image table was embedded from, building in the background (None: none recorded)."""
    metadata = read_metadata(table)
    spec = dict(((metadata.get("config") or {}).get("datasets") or {}).get(dataset_name) or {})
    described = (metadata.get("datasets") or {}).get(dataset_name) or {}
    if not spec:
        return None
    if described.get("path") and Path(str(described["path"])).exists():
        spec["path"] = described["path"]  # absolute, so the server may run from anywhere
    if spec.get("streaming"):
        spec["streaming"] = False  # thumbnails need random access
    if spec.get("follow_links"):
        spec["follow_links"] = False  # a table's metadata never widens what the server reads
    try:
        images = ItemImages(name, get_dataset(spec, name=dataset_name))
    except Exception as exc:  # a dataset that cannot be made here only loses its thumbnails
        log.warning("table %s: no thumbnails, dataset %s: %s", name, dataset_name, exc)
        return ItemImages(name, None, error=str(exc))
    images.start()
    return images


class ThumbnailCache:
    """LRU of encoded thumbnails (bytes), keyed by (table, item id).

    A thumbnail goes through what an upload goes through: an image its
    dataset reads whole (a tar member) is refused over ``max_bytes`` from its
    header, any image over ``max_pixels``, and it is read and decoded inside
    one of the server's decode slots: a page of large photos, or a dozen
    requests for a 300 MB member, must not hold a dozen full images at once.
    """

    def __init__(
        self,
        size: int = 256,
        capacity: int = 4096,
        max_pixels: int | None = None,
        slots: DecodeSlots | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.size, self.capacity, self.max_pixels = size, capacity, max_pixels
        self.max_bytes = max_bytes
        self.slots = slots or DecodeSlots()
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.made = 0  # thumbnails encoded (not served from the cache)

    def get(self, table: LoadedTable, item_id: str) -> bytes:
        """The thumbnail; LookupError when the table has no image source.

        The item's source raises ``UnknownItem`` or ``SourceUnavailable``, and
        its size or its decoding ``ImageDecodeError``.
        """
        key = (table.name, item_id)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if table.images is None:
            raise LookupError(f"table {table.name} has no readable image source for thumbnails")
        with self.slots.hold():
            source = table.images.source(item_id, self.max_bytes)
            draft = (self.size, self.size)  # a JPEG decodes at 1/2 to 1/8 scale, cheaply
            data = self.encode(open_image(source, max_pixels=self.max_pixels, draft=draft))
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
