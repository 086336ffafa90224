"""The FastAPI application: JSON search API, thumbnails, and the page that uses them.

Every item is addressed by (table name, item id) and looked up in what was
loaded at start-up; nothing in a request is ever used as a file path.
"""

from __future__ import annotations

import io
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from img_search.data import open_image
from img_search.data.images import ImageDecodeError
from img_search.search.query_encoder import encode_images, encode_text_queries
from img_search.search.tables import UnknownItem
from img_search.serve.catalog import Catalog, LoadedTable
from img_search.serve.thumbnails import ThumbnailCache

STATIC = resources.files("img_search.serve") / "static"
#: What an upload may be (Pillow would also open EPS, which runs Ghostscript).
UPLOAD_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
#: Room for the multipart envelope and the other form fields around the file.
FORM_OVERHEAD = 64 * 1024


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before it is stored.

    Starlette spools multipart files to disk without a size cap, so the
    endpoint's own check would come after the whole body was written. Bodies
    are checked by ``Content-Length`` up front and counted while they stream
    (chunked uploads have no length).
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)

    @property
    def message(self) -> str:
        return f"the upload is larger than {self.limit - FORM_OVERHEAD} bytes"

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        await JSONResponse({"error": self.message}, status_code=413)(scope, receive, send)


@dataclass
class ServeSettings:
    default_k: int = 12
    max_k: int = 200
    max_upload_bytes: int = 10 * 2**20
    max_upload_pixels: int = 40_000_000
    max_query_chars: int = 1000
    thumbnail_size: int = 256


def create_app(catalog: Catalog, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    thumbnails = ThumbnailCache(settings.thumbnail_size, max_pixels=settings.max_upload_pixels)
    encoder_lock = threading.Lock()  # one forward pass at a time: the model uses every core
    app = FastAPI(
        title="img_search",
        description="Search embedding tables by text, image or item id.",
        version="1",
    )
    app.state.catalog, app.state.thumbnails = catalog, thumbnails

    @app.exception_handler(StarletteHTTPException)  # FastAPI's and the router's own 404/405
    async def json_errors(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    def table_of(name: str | None) -> LoadedTable:
        try:
            return catalog.get(name)
        except KeyError:
            raise HTTPException(
                404, f"unknown table {name!r}; loaded: {', '.join(catalog.tables)}"
            ) from None

    def k_of(k: int | None) -> int:
        k = settings.default_k if k is None else k
        if not 1 <= k <= settings.max_k:
            raise HTTPException(422, f"k must be between 1 and {settings.max_k}, got {k}")
        return k

    def results(
        table: LoadedTable,
        vector: np.ndarray,
        k: int,
        query: dict[str, Any],
        started: float,
        exclude: str | None = None,
    ) -> dict[str, Any]:
        encoded = time.perf_counter()
        found = table.index.top_k(vector, k, exclude)
        searched = time.perf_counter()
        hits = []
        for position, item_id, score in found:
            hit: dict[str, Any] = {"rank": len(hits) + 1, "id": item_id, "score": score}
            for column, values in table.details.items():
                hit[column] = str(values[position])
            image = (
                (table.name, item_id)
                if table.kind == "image"
                else catalog.image_item_of_caption(table, int(position))
            )
            if image is not None and catalog.tables[image[0]].images is not None:
                hit["thumbnail"] = app.url_path_for(
                    "thumbnail", table=quote(image[0], safe=""), item_id=quote(image[1], safe="/")
                )
                hit["image_table"], hit["image_item"] = image
            hits.append(hit)
        return {
            "table": table.name,
            "model_name": table.index.model_name,
            "query": query,
            "took_ms": {
                "encode": round(1000 * (encoded - started), 3),
                "search": round(1000 * (searched - encoded), 3),
            },
            "results": hits,
        }

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "tables": len(catalog.tables)}

    @app.get("/api/tables")
    def tables() -> dict[str, Any]:
        return {
            "tables": [t.describe() for t in catalog.tables.values()],
            "default_k": settings.default_k,
        }

    @app.get("/api/search/text")
    def search_text(
        q: Annotated[str, Query(description="the query text")],
        table: str | None = None,
        k: int | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        loaded, k = table_of(table), k_of(k)
        if not q.strip():
            raise HTTPException(422, "the query text is empty")
        if len(q) > settings.max_query_chars:
            raise HTTPException(
                422, f"the query is longer than {settings.max_query_chars} characters"
            )
        if loaded.encoder is None or not loaded.encoder.supports_texts:
            raise HTTPException(
                400,
                f"table {loaded.name} ({loaded.index.model_name}) has no text model: "
                "search a caption table, or search this one by image",
            )
        with encoder_lock:
            vector = encode_text_queries(loaded.encoder, [q])[0]
        return results(loaded, vector, k, {"text": q}, started)

    @app.post("/api/search/image")
    def search_image(
        file: Annotated[UploadFile, File(description="an image file")],
        table: Annotated[str | None, Form()] = None,
        k: Annotated[int | None, Form()] = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        loaded, k = table_of(table), k_of(k)
        if loaded.encoder is None or not loaded.encoder.supports_images:
            raise HTTPException(
                400, f"table {loaded.name} ({loaded.index.model_name}) has no image model"
            )
        data = file.file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"the upload is larger than {settings.max_upload_bytes} bytes")
        image = decode_upload(data, settings.max_upload_pixels)
        with encoder_lock:
            vector = encode_images(loaded.encoder, [image])[0]
        return results(loaded, vector, k, {"image": file.filename}, started)

    @app.get("/api/similar")
    def similar(id: str, table: str | None = None, k: int | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        loaded, k = table_of(table), k_of(k)
        row = loaded.row_of.get(id)
        if row is None:
            raise HTTPException(404, f"no item {id!r} in table {loaded.name}")
        vector = loaded.index.vector(row)
        return results(loaded, vector, k, {"id": id}, started, exclude=id)

    @app.get("/api/thumbnail/{table}/{item_id:path}", name="thumbnail")
    def thumbnail(table: str, item_id: str) -> Response:
        loaded = table_of(table)
        if item_id not in loaded.row_of:
            raise HTTPException(404, f"no item {item_id!r} in table {loaded.name}")
        try:
            data = thumbnails.get(loaded, item_id)
        except UnknownItem as exc:
            raise HTTPException(404, str(exc)) from None
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except ImageDecodeError as exc:
            raise HTTPException(422, f"item {item_id!r}: {exc}") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + FORM_OVERHEAD)
    return app


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """An uploaded image, or 413 (too many pixels) / 422 (not an image)."""
    if not data:
        raise HTTPException(422, "the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as probe:
                width, height = probe.size
    except Image.DecompressionBombError:
        raise HTTPException(413, "the image has too many pixels") from None
    except Exception:
        raise HTTPException(422, "the upload is not an image this server can read") from None
    if width * height > max_pixels:
        raise HTTPException(
            413, f"the image has {width}x{height} pixels, more than the limit of {max_pixels}"
        )
    try:
        return open_image(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise HTTPException(422, f"the upload is not a readable image: {exc}") from None
