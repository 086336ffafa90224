"""Flickr30k captions straight from ``lmms-lab/flickr30k`` (its ``caption`` list and ``filename``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from img_search.data.hub_files import load_hf_dataset
from img_search.data.id_filters import read_id_list
from img_search.data.text import CaptionTable, image_stem, number_captions


class Flickr30kCaptionsDataset(CaptionTable):
    """Five captions per image; ids ``<filename stem>#<n>`` as the JSONL route gives for the same image."""

    kind = "flickr30k_captions"

    def __init__(
        self,
        name: str,
        path: str = "lmms-lab/flickr30k",
        splits: Sequence[str] | str = ("test",),
        revision: str | None = None,
        caption_column: str = "caption",
        image_column: str = "filename",
        ids: Sequence[str] | None = None,
        ids_file: str | None = None,
    ) -> None:
        super().__init__(name)
        self.path = str(path)
        self.splits = [splits] if isinstance(splits, str) else list(splits)
        self.revision = revision
        self.caption_column = caption_column
        self.image_column = image_column
        self._keep = read_id_list(ids, ids_file)

    def build(self) -> None:
        table = load_hf_dataset(self.path, self.splits, revision=self.revision)
        for column in (self.caption_column, self.image_column):
            if column not in table.column_names:
                raise ValueError(
                    f"dataset {self.name} ({self.path}) has no column {column!r}; "
                    f"columns are {table.column_names}"
                )
        # Only the two text columns: the image bytes are never read.
        data = table.data.select([self.image_column, self.caption_column])
        images = data.column(self.image_column).to_pylist()
        captions = data.column(self.caption_column).to_pylist()
        if self._keep is not None:
            rows = [i for i, image in enumerate(images) if image_stem(image) in self._keep]
            images, captions = [images[i] for i in rows], [captions[i] for i in rows]
        self.set_records(*number_captions(images, [list(c or []) for c in captions]))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "splits": self.splits,
            "revision": self.revision,
        }
