"""Captions of WebDataset tars: each sample's ``.txt``, or a field of its ``.json`` (img2dataset's ``caption``).

Caption ids are ``<image id>#<n>`` with the image id of the ``webdataset``
image dataset (``00000/000000012``), so the caption table of some tars
joins the image table of the same tars through ``image_id``.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from img_search.data.limits import DEFAULT_MAX_CAPTION_BYTES, checked_limit
from img_search.data.tar_listing import TarListing, list_tars
from img_search.data.tar_reading import TarSample, TarWalk, member_data, printable, refusal
from img_search.data.tar_urls import expand_urls, tar_stem
from img_search.data.text import CaptionTable, checked_text, parse_json, records_table
from img_search.data.webdataset import DEFAULT_IMAGE_KEYS

log = logging.getLogger(__name__)
SETTING = "text_dataset.max_caption_bytes"


@dataclass(frozen=True)
class CaptionListing:
    """Lists a tar's captions (``list_tars`` runs it in a pool): member ``member``, or its ``json_field``.

    The caption members are read as the walk meets them (a compressed tar is
    decompressed once, forward); one over ``max_caption_bytes`` is refused
    from its header, unread.
    """

    member: str
    json_field: str | None
    caption_key: str  # as configured, named in messages
    image_keys: tuple[str, ...]
    max_caption_bytes: int = DEFAULT_MAX_CAPTION_BYTES

    def __call__(self, url: str) -> TarListing:
        walk = TarWalk(url, keep=self.wanted)
        ids, texts, images, image_ids = [], [], [], []
        unusable: list[tuple[str, str]] = []
        for _, sample in walk:
            image_id = f"{tar_stem(url)}/{printable(sample.key)}"
            try:
                captions = self.sample_captions(sample)
            except ValueError as exc:
                unusable.append((image_id, str(exc)))
                continue
            image = next((sample.members[k] for k in self.image_keys if k in sample.members), None)
            where = "" if image is None else f"{url.rsplit('/', 1)[-1]}/{printable(image.name)}"
            for n, caption in enumerate(captions):
                ids.append(f"{image_id}#{n}")
                texts.append(caption)
                images.append(where)
                image_ids.append(image_id)
        table = records_table(ids, texts, images, image_ids)
        return TarListing(table, walk.samples, unusable + walk.problems, walk.compressed)

    def wanted(self, info: tarfile.TarInfo) -> bool:
        """Whether the walk reads ``info``: a caption member, a file, within the limit."""
        extension = info.name.rpartition("/")[2].partition(".")[2]
        return (
            extension.lower() == self.member
            and info.isreg()
            and info.size <= self.max_caption_bytes
        )

    def sample_captions(self, sample: TarSample) -> list[str]:
        """The sample's captions; ValueError with the reason when it has none."""
        member = sample.members.get(self.member)
        if sample.problem is not None:
            raise ValueError(sample.problem)
        if member is None:
            raise ValueError(
                f"no caption (has: {sample.has()}); text_dataset.caption_key={self.caption_key}"
            )
        why = refusal(member, self.max_caption_bytes, SETTING)
        data = member_data(member)
        if why is not None or data is None:
            raise ValueError(why or f"{printable(member.name)} was not read")
        return self.captions(data, printable(member.name))

    def captions(self, data: bytes, name: str) -> list[str]:
        """The captions a member's bytes hold; ValueError with the reason when none."""
        setting = f"text_dataset.caption_key={self.caption_key}"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name} is not UTF-8 text (byte {exc.start}); {setting}") from None
        try:
            if self.json_field is None:
                return [checked_text(text)]
            record = parse_json(text)
            value = record.get(self.json_field) if isinstance(record, dict) else None
            if isinstance(value, str):
                return [checked_text(value)]
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return [checked_text(v) for v in value]
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}; {setting}") from None
        found = "missing or null" if value is None else f"of type {type(value).__name__}"
        raise ValueError(f"no caption: {name} field {self.json_field!r} is {found}; {setting}")


class WebDatasetCaptions(CaptionTable):
    """One caption a sample (or several, for a JSON list): member ``caption_key`` (``txt``, ``json:caption``).

    A sample without that caption (no member, no field, not text) is
    reported with its id and skipped, as are a caption member over
    ``max_caption_bytes`` (refused from its header), a caption that is not
    text (malformed or too deeply nested JSON, a lone surrogate) and the
    samples a damaged tar lost;
    an empty caption is an item error of the run, as for JSONL. ``image`` is
    ``<tar name>/<image member>`` (empty for a sample without an image).
    """

    kind = "webdataset_captions"
    builds_together = True

    def __init__(
        self,
        name: str,
        urls: str | Sequence[str],
        caption_key: str = "txt",
        image_keys: Sequence[str] = DEFAULT_IMAGE_KEYS,
        max_caption_bytes: int = DEFAULT_MAX_CAPTION_BYTES,
    ) -> None:
        super().__init__(name)
        if not urls:
            raise ValueError(
                f"text_dataset {name}: urls is empty; give tars (a brace pattern, a list, "
                "a folder or a .txt file listing them)"
            )
        member, _, json_field = str(caption_key).partition(":")
        if not member:
            raise ValueError(
                f"text_dataset.caption_key must name a member, e.g. txt or json:caption, "
                f"got {caption_key!r}"
            )
        self.urls: str | list[str] = urls if isinstance(urls, str) else [str(u) for u in urls]
        self.caption_key = str(caption_key)
        self.reading = CaptionListing(
            member.lower(),
            json_field or None,
            self.caption_key,
            tuple(str(k).lower().lstrip(".") for k in image_keys),
            checked_limit(max_caption_bytes, SETTING),
        )
        self._problems: list[tuple[str, str]] = []

    def build(self) -> None:
        tars = expand_urls(self.urls, "text_dataset.urls")
        listings = list_tars(tars, self.reading, self.context, f"text dataset {self.name}")
        self.set_table(pa.concat_tables([listing.table for listing in listings]))
        self._problems = [problem for listing in listings for problem in listing.problems]
        log.info(
            "text dataset %s: %d captions in %d tars (%d samples without one)",
            self.name,
            self.length(),
            len(tars),
            len(self._problems),
        )

    def problems(self) -> list[tuple[str, str]]:
        return list(self._problems)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "urls": self.urls,
            "caption_key": self.caption_key,
            "max_caption_bytes": self.reading.max_caption_bytes,
        }
