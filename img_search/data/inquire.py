"""INQUIRE-Rerank (``evendrow/INQUIRE-Rerank``): 100 candidate images per query, ids from iNat24."""

from __future__ import annotations

from collections.abc import Sequence

from img_search.data.hub import HubImageDataset


class InquireDataset(HubImageDataset):
    """Candidate images of INQUIRE-Rerank, each embedded once.

    The dataset has one row per (query, candidate image); an image can be a
    candidate of several queries, so rows are de-duplicated by
    ``inat24_file_name``, which is also the item id (it joins back to the
    benchmark's relevance labels).
    """

    kind = "inquire"

    def __init__(
        self,
        name: str,
        path: str = "evendrow/INQUIRE-Rerank",
        splits: Sequence[str] | str = ("validation", "test"),
        streaming: bool = False,
        revision: str | None = None,
        image_column: str = "image",
        id_column: str = "inat24_file_name",
    ) -> None:
        super().__init__(
            name,
            path=path,
            splits=splits,
            image_column=image_column,
            id_column=id_column,
            dedupe=True,
            streaming=streaming,
            revision=revision,
        )
