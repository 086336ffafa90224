"""``img-search query`` (``python -m img_search.search.query index=<index or table> text=...|image=...|id=...``).

The command only: the query is answered by ``search.hits``; this prints the
hits as a table, or as JSON with ``json=true``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from img_search.cli.errors import user_errors_exit
from img_search.cli.hydra_entry import hydra_entry
from img_search.console import stdout_console

if TYPE_CHECKING:
    from img_search.search.hits import Hit
    from img_search.search.indexes import SavedIndex


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
        from img_search.search.hits import query_vector, search
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
                device=str(cfg.device),
                trust_remote_code=bool(cfg.trust_remote_code),
            )
            exclude = None if cfg.id is None else str(cfg.id)
            hits = search(index, vector, int(cfg.k), exclude, where, group_of(cfg.group))
        finally:
            index.close()
        print_hits(hits, index, bool(cfg.json))
