"""The Python API: ``load_encoder``, ``embed`` and ``open_table`` (re-exported by ``img_search``)."""

from img_search.api.encoding import EncodedImages, ImageFailure, ModelEncoder, load_encoder
from img_search.api.jobs import EmbedSummary, embed
from img_search.api.tables import Table, open_table

__all__ = [
    "EmbedSummary",
    "EncodedImages",
    "ImageFailure",
    "ModelEncoder",
    "Table",
    "embed",
    "load_encoder",
    "open_table",
]
