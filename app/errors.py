"""Every error becomes JSON `{"detail": "<one sentence>"}` with the right status; never a traceback.

The library (`cnn_ocr`) raises domain errors that know nothing of HTTP; `DOMAIN_STATUS` is the one place
that says which status answers each of them. `ApiError` is for refusals the HTTP layer itself decides
(a wrong content type, a missing token, too many requests).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.middleware import BodyTooLarge
from app.model_store import NoModelError
from cnn_ocr.decode import ImageTooLarge, InvalidImage, UndecodableImage, UnsupportedImage
from cnn_ocr.feedback import InvalidFeedback, NoFeedback, StoreUnavailable, UnknownPrediction

log = logging.getLogger("ocr.errors")

# Each domain error and the status it is answered with (a subclass is answered like its parent).
DOMAIN_STATUS: dict[type[Exception], int] = {
    UndecodableImage: 400,
    UnknownPrediction: 404,
    NoFeedback: 404,
    ImageTooLarge: 413,
    BodyTooLarge: 413,
    UnsupportedImage: 415,
    InvalidImage: 422,
    InvalidFeedback: 422,
    NoModelError: 503,
    StoreUnavailable: 503,
}
# Errors after which the connection is closed: the rest of an oversized body is never read.
_CLOSE_CONNECTION = (BodyTooLarge,)


class ApiError(Exception):
    """A refusal decided by the HTTP layer itself: `status`, a one-sentence `detail`, optional headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def status_for(exc: BaseException) -> int | None:
    """The HTTP status answering a domain error (looked up along its class hierarchy); None if unmapped."""
    for cls in type(exc).__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    return None


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _validation_sentence(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "The request is not valid."
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "The body is not valid JSON."
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid value')}{more}."


# nginx's code for "client closed request": nobody receives the response; the metrics count it apart.
CLIENT_CLOSED = 499

_FRAMEWORK_DETAILS = {
    "Not Found": "There is no such endpoint; the API is described at /docs.",
    "Method Not Allowed": "This endpoint does not accept that HTTP method; see /docs.",
    "There was an error parsing the body": "The request body cannot be parsed; check its Content-Type and format.",
}


def _http_sentence(exc: StarletteHTTPException) -> str:
    """The framework's own short phrases ("Not Found") as one clear sentence."""
    if not isinstance(exc.detail, str) or not exc.detail.strip():
        return "The request cannot be served."
    detail = _FRAMEWORK_DETAILS.get(exc.detail, exc.detail.strip())
    return detail if detail.endswith((".", "?", "!")) else detail + "."


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.detail, exc.headers)

    async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
        headers = {"connection": "close"} if isinstance(exc, _CLOSE_CONNECTION) else None
        return _json(status_for(exc) or 500, str(exc), headers)

    for error_type in DOMAIN_STATUS:
        app.add_exception_handler(error_type, _domain_error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _json(422, _validation_sentence(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json(exc.status_code, _http_sentence(exc), getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> Response:
        log.info("client left during %s %s before its request body was complete", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc,
                  exc_info=exc)
        return _json(500, "Internal error while handling the request; it has been logged.")
