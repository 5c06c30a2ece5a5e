"""Every error becomes JSON `{"detail": "<one sentence>"}` with the right status; never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.inputs import ApiError
from app.middleware import BodyTooLarge
from cnn_ocr.decode import ImageError
from cnn_ocr.feedback import FeedbackError

log = logging.getLogger("ocr.errors")


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

    @app.exception_handler(ImageError)
    async def _image_error(_: Request, exc: ImageError) -> JSONResponse:
        return _json(exc.status, str(exc))

    @app.exception_handler(FeedbackError)
    async def _feedback_error(_: Request, exc: FeedbackError) -> JSONResponse:
        return _json(exc.status, str(exc))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return _json(413, str(exc), {"connection": "close"})

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
