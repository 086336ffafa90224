"""img_search: embed image collections and caption corpora into Parquet tables, then search them.

The Python API, for notebooks (the command line is ``img-search``)::

    import img_search

    model = img_search.load_encoder("siglip2")                 # the models=… of the command line
    vectors = model.encode_images(["a.jpg", "b.jpg"])           # (2, dim) float32 unit vectors
    img_search.embed("siglip2", {"image_folder": {"path": "photos"}}, "out/photos.parquet")
    table = img_search.open_table("out/photos.parquet")
    table.search(text="a red fox in snow", k=5)

Importing the package loads nothing heavy: each name loads its module when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name → the module that holds it.
_EXPORTS = {
    "load_encoder": "img_search.api.encoding",
    "ModelEncoder": "img_search.api.encoding",
    "EncodedImages": "img_search.api.encoding",
    "ImageFailure": "img_search.api.encoding",
    "embed": "img_search.api.jobs",
    "EmbedSummary": "img_search.api.jobs",
    "open_table": "img_search.api.tables",
    "Table": "img_search.api.tables",
}

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

if TYPE_CHECKING:
    from img_search.api.encoding import EncodedImages, ImageFailure, ModelEncoder, load_encoder
    from img_search.api.jobs import EmbedSummary, embed
    from img_search.api.tables import Table, open_table


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'img_search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
