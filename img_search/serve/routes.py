"""The endpoints: each one reads what it needs from ``app.state`` through a dependency.

Nothing here holds state of its own, so an endpoint reads top to bottom on
one screen and can be tested with any catalog and settings put in
``app.state`` (``create_app`` does that for the real server).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.convertors import Convertor, register_url_convertor

from img_search.images import ImageDecodeError
from img_search.search.grouping import best_per_image
from img_search.search.indexes import FilterError
from img_search.serve.catalog import Catalog, LoadedTable
from img_search.serve.queries import QueryEncoder
from img_search.serve.thumbnails import SourceUnavailable, ThumbnailCache
from img_search.store.selection import UnknownItem

#: An absolute path inside an error text: only its last part is shown to a client.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~%-])/(?:[^\s'\"/]+/)+([^\s'\"/]*)")


@dataclass
class ServeSettings:
    default_k: int = 12
    max_k: int = 200
    max_upload_bytes: int = 10 * 2**20
    max_upload_pixels: int = 40_000_000
    max_query_chars: int = 1000
    thumbnail_size: int = 256


class ItemIdConvertor(Convertor[str]):
    """Like ``path``, but an id may also hold a newline (``.*`` stops at one)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("item_id", ItemIdConvertor())


def catalog_of(request: Request) -> Catalog:
    return request.app.state.catalog


def settings_of(request: Request) -> ServeSettings:
    return request.app.state.settings


def query_encoder_of(request: Request) -> QueryEncoder:
    return request.app.state.query_encoder


def thumbnails_of(request: Request) -> ThumbnailCache:
    return request.app.state.thumbnails


Tables = Annotated[Catalog, Depends(catalog_of)]
Settings = Annotated[ServeSettings, Depends(settings_of)]
Queries = Annotated[QueryEncoder, Depends(query_encoder_of)]
Thumbnails = Annotated[ThumbnailCache, Depends(thumbnails_of)]

router = APIRouter()


def without_paths(text: str) -> str:
    """An error text from a lower layer, with absolute server paths cut to their last part."""
    return ABSOLUTE_PATH.sub(r"\1", text)


def table_of(catalog: Catalog, name: str | None) -> LoadedTable:
    try:
        return catalog.get(name)
    except KeyError:
        raise HTTPException(
            404, f"unknown table {name!r}; loaded: {', '.join(catalog.tables)}"
        ) from None


def k_of(k: int | None, settings: ServeSettings) -> int:
    k = settings.default_k if k is None else k
    if not 1 <= k <= settings.max_k:
        raise HTTPException(422, f"k must be between 1 and {settings.max_k}, got {k}")
    return k


def table_for(catalog: Catalog, name: str | None, side: str) -> LoadedTable:
    """The named table, or the first whose model reads ``side`` ("text" or "image"); else 400."""
    loaded = catalog.first(side) if name is None else table_of(catalog, name)
    if loaded is None:
        raise HTTPException(
            400, f"no loaded table ({', '.join(catalog.tables)}) has a model that reads {side}"
        )
    if not loaded.reads(side):
        hint = ": search a caption table, or search this one by image" if side == "text" else ""
        raise HTTPException(
            400, f"table {loaded.name} ({loaded.index.model_name}) has no {side} model{hint}"
        )
    return loaded


def where_of(table: LoadedTable, text: str | None) -> Any:
    """The ``filter`` parameter checked against the table's index (milvus), or 422; an index
    that cannot filter names the serve setting that gives one that can."""
    try:
        return table.index.parse_filter(text)
    except FilterError as exc:
        if not table.index.filters:
            raise HTTPException(
                422,
                f"table {table.name} is served from a {table.index.meta['kind']} index, which "
                f"cannot filter: serve it from a milvus index (tables.{table.name}.index=milvus)",
            ) from None
        raise HTTPException(422, str(exc)) from None


#: The ``filter`` parameter of the search endpoints (Python name ``where``: ``filter`` is a builtin).
FILTER_HELP = (
    'milvus indexes only: e.g. dataset_name == "inquire", image_id in ["a", "b"], '
    'caption like "a dog%", joined with and / or / not'
)
#: The ``group`` parameter of the search endpoints.
GROUP_HELP = "image: caption hits merged by image (each image once, at its best caption's score)"
Group = Literal["image", "none"]


def ranked(
    table: LoadedTable, vector: np.ndarray, k: int, exclude: str | None, where: Any, grouped: bool
) -> list[list[tuple[int, str, float]]]:
    """The best hits, each alone, or grouped by image: the k best images' caption hits."""
    if not grouped:
        return [[hit] for hit in table.top_k(vector, k, exclude, where)]
    images = table.details["image_id"]
    return best_per_image(
        lambda n: table.top_k(vector, n, exclude, where),
        k,
        lambda hit: str(images[hit[0]]),
        table.rows,
    )


def results(
    request: Request,
    catalog: Catalog,
    table: LoadedTable,
    vector: np.ndarray,
    k: int,
    query: dict[str, Any],
    started: float,
    exclude: str | None = None,
    where: Any = None,
    group: Group | None = None,
) -> dict[str, Any]:
    """The ranked hits of one query vector, each with its details and thumbnail link; with
    ``group="image"`` over a caption table, one hit per image (``search.grouping``)."""
    encoded = time.perf_counter()
    grouped = group == "image" and "image_id" in table.details
    found = ranked(table, vector, k, exclude, where, grouped)
    searched = time.perf_counter()
    hits = []
    for group_hits in found:
        position, item_id, score = group_hits[0]
        hit: dict[str, Any] = {"rank": len(hits) + 1, "id": item_id, "score": score}
        for column, values in table.details.items():
            hit[column] = str(values[position])
        if grouped:  # the image's captions among the hits, best first
            captions = table.details.get("caption", table.details["image_id"])
            hit["captions"] = [str(captions[p]) for p, _, _ in group_hits]
        image = (
            (table.name, item_id)
            if table.kind == "image"
            else catalog.image_item_of_caption(table, position)
        )
        if image is not None and catalog.tables[image[0]].images is not None:
            hit["thumbnail"] = request.app.url_path_for(
                "thumbnail", table=quote(image[0], safe=""), item_id=quote(image[1], safe="/")
            )
            hit["image_table"], hit["image_item"] = image
        hits.append(hit)
    return {
        "table": table.name,
        "model_name": table.index.model_name,
        "query": {**query, **({"group": "image"} if grouped else {})},
        "took_ms": {
            "encode": round(1000 * (encoded - started), 3),
            "search": round(1000 * (searched - encoded), 3),
        },
        "results": hits,
    }


@router.get("/api/health")
def health(catalog: Tables) -> dict[str, Any]:
    return {"status": "ok", "tables": len(catalog.tables)}


@router.get("/api/tables")
def tables(catalog: Tables, settings: Settings) -> dict[str, Any]:
    return {
        "tables": [t.describe() for t in catalog.tables.values()],
        "default_k": settings.default_k,
    }


@router.get("/api/search/text")
def search_text(
    request: Request,
    catalog: Tables,
    settings: Settings,
    queries: Queries,
    q: Annotated[str, Query(description="the query text")],
    table: Annotated[str | None, Query(description="default: the first with a text model")] = None,
    k: int | None = None,
    where: Annotated[str | None, Query(alias="filter", description=FILTER_HELP)] = None,
    group: Annotated[Group | None, Query(description=GROUP_HELP)] = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    loaded, k = table_for(catalog, table, "text"), k_of(k, settings)
    if not q.strip():
        raise HTTPException(422, "the query text is empty")
    if len(q) > settings.max_query_chars:
        raise HTTPException(422, f"the query is longer than {settings.max_query_chars} characters")
    parsed = where_of(loaded, where)
    vector = queries.text(loaded.encoder, q)
    query = {"text": q, **({"filter": where} if parsed else {})}
    return results(request, catalog, loaded, vector, k, query, started, where=parsed, group=group)


@router.post("/api/search/image")
def search_image(
    request: Request,
    catalog: Tables,
    settings: Settings,
    queries: Queries,
    file: Annotated[UploadFile, File(description="an image file")],
    table: Annotated[str | None, Form(description="default: the first with an image model")] = None,
    k: Annotated[int | None, Form()] = None,
    where: Annotated[str | None, Form(alias="filter", description=FILTER_HELP)] = None,
    group: Annotated[Group | None, Form(description=GROUP_HELP)] = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    loaded, k = table_for(catalog, table, "image"), k_of(k, settings)
    parsed = where_of(loaded, where)
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"the upload is larger than {settings.max_upload_bytes} bytes")
    vector = queries.image(loaded.encoder, data)
    query = {"image": file.filename, **({"filter": where} if parsed else {})}
    return results(request, catalog, loaded, vector, k, query, started, where=parsed, group=group)


@router.get("/api/similar")
def similar(
    request: Request,
    catalog: Tables,
    settings: Settings,
    id: str,
    table: str | None = None,
    k: int | None = None,
    where: Annotated[str | None, Query(alias="filter", description=FILTER_HELP)] = None,
    group: Annotated[Group | None, Query(description=GROUP_HELP)] = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    loaded, k = table_of(catalog, table), k_of(k, settings)
    parsed = where_of(loaded, where)
    if id in loaded.left_out:
        raise HTTPException(
            422, f"item {id!r} of table {loaded.name} is left out: {loaded.left_out[id]}"
        )
    row = loaded.row_of.get(id)
    if row is None:
        raise HTTPException(404, f"no item {id!r} in table {loaded.name}")
    vector = loaded.index.vector(row)
    query = {"id": id, **({"filter": where} if parsed else {})}
    return results(
        request, catalog, loaded, vector, k, query, started, exclude=id, where=parsed, group=group
    )


@router.get("/api/thumbnail/{table}/{item_id:item_id}", name="thumbnail")
def thumbnail(catalog: Tables, thumbnails: Thumbnails, table: str, item_id: str) -> Response:
    loaded = table_of(catalog, table)
    if not loaded.holds(item_id):
        raise HTTPException(404, f"no item {item_id!r} in table {loaded.name}")
    try:
        data = thumbnails.get(loaded, item_id)
    except SourceUnavailable as exc:
        retry = {"Retry-After": "5"} if exc.building else None
        raise HTTPException(503, str(exc), headers=retry) from None
    except LookupError as exc:  # no image source recorded for this table
        raise HTTPException(404, str(exc)) from None
    except UnknownItem as exc:
        raise HTTPException(404, str(exc)) from None
    except ImageDecodeError as exc:
        raise HTTPException(
            422, f"the image of item {item_id!r} cannot be read: {without_paths(str(exc))}"
        ) from None
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})
