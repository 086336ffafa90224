"""``python -m img_search.search.query index=<index or table> text=...|image=...|id=...``: top-k items."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from img_search.cli import pick_device, user_errors_exit
from img_search.command_line import hydra_entry
from img_search.console import stdout_console

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
    its identity (``query_encoder``); torch loads only here."""
    from img_search.search.query_encoder import load_query_encoder

    return load_query_encoder(
        index.model_name,
        index.meta.get("model_spec") or {},
        index.meta.get("identity") or {},
        overrides=model_overrides,
        device=device,
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
        from img_search.search.tables import vector_of

        return vector_of(index.table, index.model_name, index.dataset_name, str(item_id))
    from img_search.search.query_encoder import encode_image_queries, encode_text_queries

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
    from img_search.search.tables import row_details

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
    from img_search.search.tables import file_path_of

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


def print_hits(hits: list[Hit], index: SavedIndex, as_json: bool) -> None:
    if as_json:
        payload = {
            "index": str(index.path),
            "model_name": index.model_name,
            "dataset_name": index.dataset_name,
            "hits": [{k: v for k, v in asdict(h).items() if v is not None} for h in hits],
        }
        # every score is finite (``SavedIndex.top_k``): the output is strict JSON, never a bare NaN
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2, allow_nan=False) + "\n")
        return
    table = Table(title=f"{index.model_name} × {index.dataset_name} ({len(index.ids)} items)")
    for column in ("rank", "score", "id"):
        table.add_column(column, justify="right" if column != "id" else "left")
    grouped = any(h.captions is not None for h in hits)
    extra = [c for c in ("image_id", "caption", "path") if grouped or c != "image_id"]
    extra = [c for c in extra if any(getattr(h, c) for h in hits)]
    for column in extra:
        table.add_column("image" if column == "image_id" else column)
    if grouped:
        table.add_column("captions", justify="right")  # of the image, among the hits
    for h in hits:
        cells = [getattr(h, c) or "" for c in extra] + ([str(len(h.captions or []))] * grouped)
        table.add_row(str(h.rank), f"{h.score:.4f}", h.id, *cells)
    stdout_console(width=160 if not sys.stdout.isatty() else None).print(table)  # ids: user text


def group_of(value: Any) -> bool:
    """``group=image``: caption hits merged by image; ``group=null`` (or ``none``): one per item."""
    if value in (None, "none", False):
        return False
    if value == "image":
        return True
    raise ValueError(f"group={value!r}: give group=image (caption hits merged by image) or none")


@hydra_entry(config_path="pkg://img_search.config.search", config_name="query")
def main(cfg: DictConfig) -> None:
    with user_errors_exit(cfg):
        if int(cfg.k) <= 0:
            raise ValueError(f"k must be positive, got {cfg.k}")
        if isinstance(cfg.id, (bool, float)):
            raise ValueError(
                f"id={cfg.id!r} was read as a number: quote it as it is written, e.g. id=\"'1e3'\""
            )
        from img_search.search.indexes import open_index

        index = open_index(cfg.index, cfg.model_name, cfg.dataset_name)
        try:
            where = index.parse_filter(cfg.filter)
            vector = query_vector(
                index,
                text=cfg.text,
                image=cfg.image,
                item_id=None if cfg.id is None else str(cfg.id),
                model_overrides=OmegaConf.to_container(cfg.model_overrides),
                device=pick_device(str(cfg.device)),
                trust_remote_code=bool(cfg.trust_remote_code),
            )
            exclude = None if cfg.id is None else str(cfg.id)
            hits = search(index, vector, int(cfg.k), exclude, where, group_of(cfg.group))
        finally:
            index.close()
        print_hits(hits, index, bool(cfg.json))


if __name__ == "__main__":
    main()
