"""WebDataset tars, as img2dataset writes them for LAION, DataComp and the like: one tar, one shard.

``build()`` walks each tar's headers (``tar_reading``: no image is read) and
records where each sample's image lies; a loader then reads its tar once, in
order, from those offsets. Item id: ``<tar stem>/<key>`` (``00000/000000012``),
which joins img2dataset's per-tar Parquet (``00000.parquet``) through its
``key`` column.

Every sample the tar holds ends as a row or an error row: a sample without
an image, a link, a name that is not UTF-8, an image over
``max_member_bytes`` (refused from its header, never read) and what a
damaged tar lost are error rows of the listing; an image whose bytes are no
longer what was listed (the tar changed meanwhile), or that does not decode,
is an error row of the loader.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from img_search.data.base import ImageDataset, ImageItem, Shard, fingerprint_arrays
from img_search.data.limits import DEFAULT_MAX_MEMBER_BYTES, checked_limit
from img_search.data.tar_listing import TarListing, list_tars
from img_search.data.tar_reading import (
    Span,
    TarChanged,
    TarReader,
    TarWalk,
    printable,
    refusal,
    span_of,
)
from img_search.data.tar_urls import expand_urls, tar_stem
from img_search.images import Unreadable

log = logging.getLogger(__name__)

DEFAULT_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
LISTING_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        # 100M samples: positions and sizes in int32 save 0.8 GB (a member is under 2 GiB)
        ("position", pa.int32()),
        ("offset", pa.int64()),
        ("size", pa.int32()),
        ("check", pa.int64()),
        ("sparse", pa.string()),  # a GNU sparse member's map as JSON; null for the others
    ]
)


@dataclass(frozen=True)
class ImageListing:
    """Lists a tar's images (``list_tars`` runs it in a pool): where each sample's image lies."""

    image_keys: tuple[str, ...]
    where: str  # the dataset's options, named in messages
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES

    def __call__(self, url: str) -> TarListing:
        stem, walk = tar_stem(url), TarWalk(url)
        rows: list[tuple[str, int, Span]] = []
        unusable: list[tuple[str, str]] = []
        for _, sample in walk:
            item_id = f"{stem}/{printable(sample.key)}"
            image = next((sample.members[k] for k in self.image_keys if k in sample.members), None)
            why = sample.problem
            if why is None and image is None:
                keys = ", ".join(self.image_keys)
                why = f"no image (has: {sample.has()}); {self.where}.image_keys=[{keys}]"
            elif why is None:
                why = refusal(image, self.max_member_bytes, f"{self.where}.max_member_bytes")
            if why is not None:
                unusable.append((item_id, why))
            else:
                rows.append((item_id, sample.position, span_of(image)))
        spans = [span for _, _, span in rows]
        columns = [
            [item_id for item_id, _, _ in rows],
            [position for _, position, _ in rows],
            [span.offset for span in spans],
            [span.size for span in spans],
            [span.check for span in spans],
            [span.sparse_json() for span in spans],
        ]
        table = pa.Table.from_arrays(
            [pa.array(c, f.type) for c, f in zip(columns, LISTING_SCHEMA, strict=True)],
            schema=LISTING_SCHEMA,
        )
        return TarListing(table, walk.samples, unusable + walk.problems, walk.compressed)


# -- the image dataset ------------------------------------------------------------------
class WebDatasetImages(ImageDataset):
    """The images of WebDataset tars: each sample's first member among ``image_keys``.

    One tar is one shard (its positions: the samples' indices in it), read
    once by a loader, in order (``random_access = False``); ``get`` reads one
    image from its recorded offset (thumbnails, iteration). An image over
    ``max_member_bytes`` is an error row, refused from its header.
    """

    kind = "webdataset"
    random_access = False
    builds_together = True

    def __init__(
        self,
        name: str,
        urls: str | Sequence[str],
        image_keys: Sequence[str] = DEFAULT_IMAGE_KEYS,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    ) -> None:
        super().__init__(name)
        if not urls:
            raise ValueError(
                f"datasets.{name}.urls is empty: give tars (a brace pattern "
                "'/data/{00000..00099}.tar', a list, a folder or a .txt file listing them)"
            )
        self.urls: str | list[str] = urls if isinstance(urls, str) else [str(u) for u in urls]
        self.image_keys = tuple(str(k).lower().lstrip(".") for k in image_keys)
        self.max_member_bytes = checked_limit(max_member_bytes, f"datasets.{name}.max_member_bytes")
        self._tars: list[str] = []
        self._counts = np.zeros(0, np.int64)  # samples per tar
        self._first = np.zeros(1, np.int64)  # each tar's first item, then the number of items
        self._ids: pa.StringArray | None = None
        self._positions = np.zeros(0, np.int64)  # per item: its sample's index in its tar
        self._offsets = np.zeros(0, np.int64)  # per item: where its image's bytes start
        self._sizes = np.zeros(0, np.int64)
        self._checks = np.zeros(0, np.int64)  # per item: crc32 of the header before its bytes
        self._sparse = pa.array([], pa.string())  # per item: a GNU sparse member's map, or null
        self._problems: list[tuple[str, str]] = []

    def build(self) -> None:
        where = f"datasets.{self.name}"
        tars = expand_urls(self.urls, f"{where}.urls")
        listing = ImageListing(self.image_keys, where, self.max_member_bytes)
        listings = list_tars(tars, listing, self.context, f"dataset {self.name}")
        table = pa.concat_tables([listing.table for listing in listings])
        rows = [listing.table.num_rows for listing in listings]
        self._tars = tars
        self._counts = np.asarray([listing.samples for listing in listings], np.int64)
        self._first = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self._ids = table.column("id").combine_chunks()
        self._positions, self._offsets, self._sizes, self._checks = (
            table.column(name).to_numpy() for name in ("position", "offset", "size", "check")
        )
        self._sparse = table.column("sparse").combine_chunks()
        self._problems = [problem for listing in listings for problem in listing.problems]
        log.info(
            "dataset %s: %d images in %d tars (%d samples unusable)",
            self.name,
            len(self._ids),
            len(tars),
            len(self._problems),
        )

    def _built(self) -> pa.StringArray:
        if self._ids is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        return self._ids

    def problems(self) -> list[tuple[str, str]]:
        return list(self._problems)

    def length(self) -> int | None:
        return None if self._ids is None else len(self._ids)

    def listing(self) -> tuple[int, str]:
        ids = self._built()
        return len(ids), fingerprint_arrays(ids)

    def item_ids(self) -> list[str]:
        return self._built().to_pylist()

    def shards(self, shard_size: int, unit: int = 0) -> list[Shard]:
        self._built()
        return [
            Shard(i, 0, int(count), label=tar.rsplit("/", 1)[-1])
            for i, (tar, count) in enumerate(zip(self._tars, self._counts, strict=True))
        ]

    def items(self, shard: Shard, start: int, stop: int) -> Iterator[tuple[int, ImageItem]]:
        """The images of ``shard`` at positions ``start`` to ``stop``; one that cannot be read is an
        ``Unreadable`` source naming the tar and the byte (an error row of the loader)."""
        self._built()
        first, last = int(self._first[shard.index]), int(self._first[shard.index + 1])
        positions = self._positions[first:last]
        begin = first + int(np.searchsorted(positions, start))
        end = first + int(np.searchsorted(positions, stop))
        if begin == end:
            return
        with TarReader(self._tars[shard.index]) as reader:
            for item in range(begin, end):
                yield int(self._positions[item]), self._read(reader, item)

    def get(self, position: int) -> ImageItem:
        self._built()
        tar = int(np.searchsorted(self._first, position, side="right")) - 1
        with TarReader(self._tars[tar]) as reader:
            return self._read(reader, position)

    def image_bytes(self, position: int) -> int | None:
        return int(self._sizes[position])

    def _read(self, reader: TarReader, item: int) -> ImageItem:
        item_id = self._built()[item].as_py()
        try:
            return ImageItem(item_id, reader.read(self._span(item)))
        except TarChanged as exc:
            return ImageItem(item_id, Unreadable(str(exc)))

    def _span(self, item: int) -> Span:
        sparse = self._sparse[item].as_py()
        runs = None if sparse is None else tuple((int(o), int(n)) for o, n in json.loads(sparse))
        return Span(int(self._offsets[item]), int(self._sizes[item]), int(self._checks[item]), runs)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "urls": self.urls,
            "tars": len(self._tars),
            "image_keys": list(self.image_keys),
            "max_member_bytes": self.max_member_bytes,
        }
