"""A query, text → vector → hits: the one path of ``img-search query``, the Python API and the server.

An id needs no model (its stored vector is the query); text and images go
through the model that made the index's vectors (``table_encoder``). Each hit
carries what is known of its item: the file path, and a caption's text and
image.
"""

from __future__ import annotations

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


def index_encoder(
    index: SavedIndex,
    model_overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> Encoder:
    """The model that made the index's vectors, rebuilt from its recorded spec and checked against
    its identity (``table_encoder``), on ``device`` (``auto``: CUDA when there is one); torch loads
    only here."""
    from img_search.embedding.devices import pick_device
    from img_search.search.table_encoder import load_query_encoder

    return load_query_encoder(
        index.model_name,
        index.meta.get("model_spec") or {},
        index.meta.get("identity") or {},
        overrides=model_overrides,
        device=pick_device(device),
        trust_remote_code=trust_remote_code,
    )


def query_vector(
    index: SavedIndex,
    text: str | None = None,
    image: Any = None,
    item_id: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    trust_remote_code: bool = False,
    encoder: Encoder | None = None,
) -> np.ndarray:
    """The one query as a unit vector in the index's space (an id needs no model at all).

    ``image`` is a path, the file's bytes or a PIL image; ``encoder`` an
    ``index_encoder`` already loaded (a caller with several queries).
    """
    given = [name for name, value in (("text", text), ("image", image), ("id", item_id)) if value]
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of text=..., image=... or id=... (got {', '.join(given) or 'none'})"
        )
    if item_id is not None:
        from img_search.store.selection import vector_of

        return vector_of(index.table, index.model_name, index.dataset_name, str(item_id))
    from img_search.search.table_encoder import encode_image_queries, encode_text_queries

    if encoder is None:
        encoder = index_encoder(index, model_overrides, device, trust_remote_code)
    if text is not None:
        return encode_text_queries(encoder, [str(text)])[0]
    return encode_image_queries(encoder, [image])[0]


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
    from img_search.store.selection import row_details

    details: dict[str, dict[str, str]] = {}

    def top_k(n: int) -> list[tuple[int, str, float]]:
        found = index.top_k(vector, n, exclude, where)
        missing = [item for _, item, _ in found if item not in details]
        details.update(row_details(index.table, index.model_name, index.dataset_name, missing))
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
