"""A query, text → vector → hits: the one path of ``img-search query``, the Python API and the server.

An id needs no model (its stored vector is the query); text and images go
through the model that made the index's vectors (``table_encoder``). Each hit
carries what is known of its item: the file path, and a caption's text and
image.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy, pyarrow and the index libraries load once the config is composed
    import numpy as np

    from img_search.embedding import Encoder
    from img_search.search.indexes import SavedIndex


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    path: str | None = None
    caption: str | None = None
    image_id: str | None = None
    #: grouped by image: the captions of this image among the hits, best first (``caption`` is
    #: the first), so ``len(captions)`` of them matched
    captions: list[str] | None = None


class Hits(list):
    """The hits of one query, best first: a list of ``Hit`` (index it, loop over it), and
    ``to_pandas()``, one row per hit with the columns that any hit fills."""

    def to_pandas(self) -> Any:
        import pandas as pd

        rows = [asdict(hit) for hit in self]
        names = [f.name for f in fields(Hit)]
        always = ("rank", "id", "score")
        columns = [n for n in names if n in always or any(r[n] is not None for r in rows)]
        return pd.DataFrame([{n: r[n] for n in columns} for r in rows], columns=columns)


def query_vector(
    index: SavedIndex,
    text: str | None = None,
    image: Any = None,
    item_id: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    *,
    vector: np.ndarray | None = None,
    loaded: dict[str, Encoder] | None = None,
) -> np.ndarray:
    """The one query as a unit vector in the index's space: an id's stored vector, a vector as
    given (made unit), or a text or image through the model that made the index's vectors
    (``table_encoder.encoder_of``, on ``device``; ``auto``: CUDA when there is one).

    ``image`` is a path, the file's bytes or a PIL image; ``loaded`` keeps
    the loaded model for a caller's next query. torch loads only here.
    """
    asked = (("text", text), ("image", image), ("id", item_id), ("vector", vector))
    given = [name for name, value in asked if _given(value)]
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of text=..., image=... or id=... (got {', '.join(given) or 'none'})"
        )
    side = given[0]
    if side == "id":
        from img_search.store.selection import vector_of

        return vector_of(index.table, index.model_name, index.dataset_name, str(item_id))
    if side == "vector":
        return unit(vector)
    if side == "image" and isinstance(image, (str, os.PathLike)) and not os.path.exists(image):
        raise FileNotFoundError(f"query image not found: {image}")
    from img_search.search.table_encoder import encoder_of, require_side

    encoder = encoder_of(
        index,
        overrides=model_overrides,
        device=device,
        trust_remote_code=trust_remote_code,
        loaded=loaded,
    )
    require_side(encoder, side)
    encoded = encoder.encode([text if side == "text" else image], side=side, on_error="skip")
    for failure in encoded.failures:  # one query: its own reason, as the decoder gave it
        raise failure.cause or failure
    return encoded.vectors[0]


def _given(value: Any) -> bool:
    """An empty text (``text=``) counts as not given, as no query at all."""
    return value is not None and not (isinstance(value, (str, bytes)) and len(value) == 0)


def unit(vector: Any) -> np.ndarray:
    """A query vector given whole, as float32 of unit length (or refused: it would match nothing)."""
    import numpy as np

    vector = np.asarray(vector, np.float32)
    norm = float(np.linalg.norm(vector))
    if vector.ndim != 1 or norm == 0 or not np.isfinite(norm):
        raise ValueError("vector= must be one non-zero, finite 1-d vector")
    return vector / norm


def search(
    index: SavedIndex,
    vector: np.ndarray,
    k: int,
    exclude: str | None = None,
    where: Any = None,
    group_by_image: bool = False,
) -> Hits:
    """Top-k hits with what is known of each item (file path, caption, image id).

    ``where``: a filter parsed by ``index.parse_filter`` (milvus indexes).
    ``group_by_image``: over a caption table, the ``k`` best images, each once at its best
    caption's score, with its matching captions (``search.grouping``).
    """
    from img_search.search.grouping import best_per_image
    from img_search.store.selection import captions_of

    details: dict[str, dict[str, str]] = {}

    def top_k(n: int) -> list[tuple[int, str, float]]:
        found = index.top_k(vector, n, exclude, where)
        missing = [item for _, item, _ in found if item not in details]
        if missing:
            known = captions_of(index.table, index.model_name, index.dataset_name, missing)
            for row, item in enumerate(missing):
                details[item] = {column: values[row] for column, values in known.items()}
        return found

    if group_by_image and index.meta.get("table_kind") == "caption":
        groups = best_per_image(
            top_k, k, lambda hit: details.get(hit[1], {}).get("image_id"), len(index.ids)
        )
    else:
        groups = [[hit] for hit in top_k(k)]
        group_by_image = False
    return Hits(
        hit_of(index, rank, group, details, group_by_image)
        for rank, group in enumerate(groups, start=1)
    )


def hit_of(
    index: SavedIndex,
    rank: int,
    group: list[tuple[int, str, float]],
    details: dict[str, dict[str, str]],
    grouped: bool,
) -> Hit:
    """The hit of one item (or of one image's captions, the best first)."""
    from img_search.store.selection import file_path_of

    _, item_id, score = group[0]
    known = details.get(item_id, {})
    captions = [details.get(i, {}).get("caption") for _, i, _ in group]
    return Hit(
        rank=rank,
        id=item_id,
        score=score,
        path=file_path_of(
            index.meta.get("dataset") or {}, index.meta.get("table_kind", "image"), item_id
        ),
        caption=known.get("caption"),
        image_id=known.get("image_id"),
        captions=[c for c in captions if c is not None] if grouped else None,
    )
