"""Flickr30k images (``lmms-lab/flickr30k``, one ``test`` split of 31,783 rows)."""

from __future__ import annotations

from collections.abc import Sequence

from img_search.data.hub import HubImageDataset


class Flickr30kDataset(HubImageDataset):
    """Flickr30k images with id = file-name stem (``1000092795.jpg`` → ``1000092795``).

    The stem is also the ``image_id`` of the caption tables, so image and
    caption rows join. ``ids`` / ``ids_file`` restrict the run to a subset such
    as the 1,000-image Karpathy test split.
    """

    kind = "flickr30k"

    def __init__(
        self,
        name: str,
        path: str = "lmms-lab/flickr30k",
        splits: Sequence[str] | str = ("test",),
        streaming: bool = False,
        revision: str | None = None,
        ids: Sequence[str] | None = None,
        ids_file: str | None = None,
        image_column: str = "image",
        id_column: str = "filename",
    ) -> None:
        super().__init__(
            name,
            path=path,
            splits=splits,
            image_column=image_column,
            id_column=id_column,
            id_transform="stem",
            dedupe=True,
            streaming=streaming,
            revision=revision,
            ids=ids,
            ids_file=ids_file,
        )
