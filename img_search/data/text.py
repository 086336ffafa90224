"""Text (caption) dataset base classes: captions with stable ids that join the image tables."""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa

from img_search.data.base import Source, fingerprint_arrays


@dataclass(frozen=True)
class CaptionRecord:
    """Everything the caption table stores about one caption besides its vector."""

    index: int  # position in the dataset
    caption_id: str  # "<image stem>#<n>"
    caption: str
    image: str  # file name of the image
    image_id: str  # image stem: joins the image table's ids


@dataclass(frozen=True)
class TextItem:
    """What travels to the loader: the id and the raw text."""

    id: str
    text: str


def image_stem(image: str) -> str:
    return PurePosixPath(str(image)).stem


RECORD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("image", pa.string()),
        pa.field("image_id", pa.string()),
    ]
)


class TextDataset(Source):
    """A corpus of captions; ``get``/iteration yield ``TextItem`` (caption id + text).

    ``get_record(index)`` recovers the full metadata of a caption on the main
    process after its vector came back from whichever rank embedded it.
    """

    @abstractmethod
    def get_record(self, index: int) -> CaptionRecord: ...

    def get(self, position: int) -> TextItem:
        record = self.get_record(position)
        return TextItem(record.caption_id, record.caption)

    def columns(self, positions: list[int]) -> dict[str, Sequence[Any] | pa.Array]:
        """What the caption table stores of these positions besides id and vector, by name (index,
        image, image_id, caption): in the process that commits them. The table's types and order
        are the store's (``store.schema.caption_columns``)."""
        records = [self.get_record(p) for p in positions]
        return {
            "index": [r.index for r in records],
            "image": [r.image for r in records],
            "image_id": [r.image_id for r in records],
            "caption": [r.caption for r in records],
        }


def records_table(
    ids: list[str], captions: list[str], images: list[str], image_ids: list[str]
) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "caption": pa.array(captions, pa.string()),
            "image": pa.array(images, pa.string()),
            "image_id": pa.array(image_ids, pa.string()),
        },
        schema=RECORD_SCHEMA,
    )


class CaptionTable(TextDataset):
    """Captions held as one Arrow table (id, caption, image, image_id).

    Arrow, not Python objects: forked loader workers share its buffers instead
    of copying every object they touch.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._table: pa.Table | None = None

    def set_records(
        self,
        ids: list[str],
        captions: list[str],
        images: list[str],
        image_ids: list[str] | None = None,
    ) -> None:
        """``image_ids`` default to the images' stems."""
        if image_ids is None:
            image_ids = [image_stem(i) for i in images]
        self.set_table(records_table(ids, captions, images, image_ids))

    def set_table(self, table: pa.Table) -> None:
        """The records as a table of ``RECORD_SCHEMA``'s columns (a source that builds them in pieces)."""
        self._table = table.select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA).combine_chunks()

    def length(self) -> int | None:
        return None if self._table is None else self._table.num_rows

    def listing(self) -> tuple[int, str]:
        """The caption ids and texts in order: another text under the same id is another job."""
        if self._table is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        table = self._table
        return table.num_rows, fingerprint_arrays(table.column("id"), table.column("caption"))

    def get_record(self, index: int) -> CaptionRecord:
        if self._table is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        row = {name: self._table.column(name)[index].as_py() for name in RECORD_SCHEMA.names}
        return CaptionRecord(index, row["id"], row["caption"], row["image"], row["image_id"])

    def columns(self, positions: list[int]) -> dict[str, Sequence[Any] | pa.Array]:
        if self._table is None:
            raise RuntimeError(f"dataset {self.name}: build() first")
        rows = self._table.take(pa.array(positions, pa.int64()))
        return {
            "index": positions,
            **{
                name: rows.column(name).combine_chunks()
                for name in ("image", "image_id", "caption")
            },
        }


def number_captions(
    images: list[str], captions_per_row: list[list[str]]
) -> tuple[list[str], list[str], list[str]]:
    """Flatten (image, [captions]) rows into ids ``<stem>#<n>``, n counting per image from 0.

    The same image on two rows keeps counting, so equal input gives equal ids
    whichever route (JSONL or Hub) it came from.
    """
    counters: dict[str, int] = {}
    ids, texts, owners = [], [], []
    for image, captions in zip(images, captions_per_row, strict=True):
        stem = image_stem(image)
        for caption in captions:
            n = counters.get(stem, 0)
            counters[stem] = n + 1
            ids.append(f"{stem}#{n}")
            texts.append(caption)
            owners.append(image)
    return ids, texts, owners


def parse_json(text: str) -> Any:
    """``json.loads``, with every way scraped text makes it fail as a ValueError with the reason.

    Malformed JSON, a number of thousands of digits (ValueError in Python
    3.11+) and nesting deeper than Python's recursion limit (RecursionError)
    all refuse the record, never the dataset.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    except ValueError as exc:
        raise ValueError(f"malformed JSON ({exc})") from None


def checked_text(text: str, what: str = "the caption") -> str:
    """``text``, or ValueError when it is not Unicode text: an escaped lone surrogate (``"\\ud83d"``,
    half of an emoji that scraping cut in two) is valid JSON, but no UTF-8 writer takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = f"\\u{ord(text[exc.start]):04x}"
        raise ValueError(
            f"{what} holds a lone surrogate ({code} at character {exc.start}), "
            "half of a character: not text"
        ) from None
    return text
