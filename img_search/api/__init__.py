"""The Python API: ``load_encoder``, ``embed`` and ``open_table`` (re-exported by ``img_search``)."""

from img_search.api.encoding import EncodedImages, ImageFailure, ModelEncoder, load_encoder
from img_search.api.jobs import EmbedSummary, embed

__all__ = [
    "EmbedSummary",
    "EncodedImages",
    "ImageFailure",
    "ModelEncoder",
    "embed",
    "load_encoder",
]
