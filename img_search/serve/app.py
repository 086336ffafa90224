"""The FastAPI application: JSON search API, thumbnails, and the page that uses them.

``create_app`` only assembles: it puts the catalog, settings, query encoder
and thumbnail cache in ``app.state``, includes the endpoints of ``routes``,
and makes every error a JSON ``{"error": ...}`` — FastAPI's own validation
errors and unexpected failures included, without server paths. Every item is
addressed by (table name, item id) and looked up in what was loaded at
start-up; nothing in a request is ever used as a file path.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from img_search.serve.catalog import Catalog
from img_search.serve.queries import DecodeSlots, QueryEncoder
from img_search.serve.routes import ServeSettings, router
from img_search.serve.thumbnails import ThumbnailCache

__all__ = ["ServeSettings", "create_app"]

STATIC = resources.files("img_search.serve") / "static"
#: Room for the multipart envelope and the other form fields around the file.
FORM_OVERHEAD = 64 * 1024
#: Where FastAPI's validation errors come from, as a user would name it.
PLACES = {"query": "query parameter", "path": "path part", "body": "form field", "header": "header"}


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


def create_app(catalog: Catalog, settings: ServeSettings | None = None) -> FastAPI:
    """The server over a loaded catalog; ``/docs`` serves Swagger UI from the package, offline."""
    settings = settings or ServeSettings()
    slots = DecodeSlots()  # shared by uploads and thumbnails: one bound on decoded pixels
    app = FastAPIOffline(
        title="img_search",
        description="Search embedding tables by text, image or item id.",
        version="1",
    )
    app.state.catalog, app.state.settings = catalog, settings
    app.state.query_encoder = QueryEncoder(settings.max_upload_pixels, slots)
    app.state.thumbnails = ThumbnailCache(
        settings.thumbnail_size,
        max_pixels=settings.max_upload_pixels,
        slots=slots,
        max_bytes=settings.max_upload_bytes,
    )
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + FORM_OVERHEAD)
    return app


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    """The endpoints' own errors, and the router's 404 and 405."""
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's parameter checks, as one line: ``query parameter 'k': Input should be …``."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"error": validation_message(exc)}, status_code=422)


async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    """A bug or an exhausted machine: the client gets no internals (uvicorn logs the traceback)."""
    return JSONResponse(
        {"error": f"internal server error ({type(exc).__name__}); the server log has the details"},
        status_code=500,
    )


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        place, *name = error.get("loc") or ("request",)
        where = PLACES.get(str(place), str(place))
        label = ".".join(str(part) for part in name)
        parts.append(f"{where} {label!r}: {error['msg']}" if label else f"{where}: {error['msg']}")
    return "; ".join(parts) or "invalid request"
