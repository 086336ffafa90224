"""``python -m img_search.search.query index=<index or table> text=...|image=...|id=...``: top-k items."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
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
    index: SavedIndex, vector: np.ndarray, k: int, exclude: str | None = None, where: Any = None
) -> list[Hit]:
    """Top-k hits with what is known of each item (file path, caption, image id).

    ``where``: a filter parsed by ``index.parse_filter`` (milvus indexes).
    """
    from img_search.search.tables import file_path_of, row_details

    hits = [(item_id, score) for _, item_id, score in index.top_k(vector, k, exclude, where)]
    details = row_details(index.table, index.model_name, index.dataset_name, [i for i, _ in hits])
    dataset = index.meta.get("dataset") or {}
    kind = index.meta.get("table_kind", "image")
    return [
        Hit(
            rank=rank,
            id=item_id,
            score=score,
            path=file_path_of(dataset, kind, item_id),
            caption=details.get(item_id, {}).get("caption"),
            image_id=details.get(item_id, {}).get("image_id"),
        )
        for rank, (item_id, score) in enumerate(hits, start=1)
    ]


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
    extra = [c for c in ("caption", "path") if any(getattr(h, c) for h in hits)]
    for column in extra:
        table.add_column(column)
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.4f}", h.id, *(getattr(h, c) or "" for c in extra))
    stdout_console(width=160 if not sys.stdout.isatty() else None).print(table)  # ids: user text


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
            hits = search(index, vector, int(cfg.k), exclude, where)
        finally:
            index.close()
        print_hits(hits, index, bool(cfg.json))


if __name__ == "__main__":
    main()
