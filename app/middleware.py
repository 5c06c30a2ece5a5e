"""Pure ASGI middleware: body-size limit, per-request metrics + one-line logs + headers, startup errors.

Pure ASGI (not BaseHTTPMiddleware) keeps streaming bodies streaming and costs a few microseconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from app.metrics import Metrics
from app.settings import Settings

log = logging.getLogger("ocr.access")
_MULTIPART_SLACK = 64 * 1024

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                 b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'"),
]
# /docs and /redoc start Swagger UI / ReDoc (served from /static/vendor) with an inline script and styles.
DOCS_CSP = (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                        b"script-src 'self' 'unsafe-inline'")


class BodyTooLarge(Exception):
    """The request body passed the limit while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than the limit of {limit:,} bytes.")
        self.limit = limit


async def _send_json(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


def body_limit_for(settings: Settings) -> Callable[[str], int]:
    """The body limit of each path: one image (base64 in JSON is 4/3 of the file), or a whole batch."""
    single = (settings.max_bytes * 4) // 3 + _MULTIPART_SLACK
    batch = settings.max_bytes * settings.batch_limit + _MULTIPART_SLACK * settings.batch_limit

    def limit_for(path: str) -> int:
        return batch if path.rstrip("/") == "/predict/batch" else single

    return limit_for


class BodyLimit:
    """Refuse bodies over a per-path limit: at once from Content-Length, or while streaming."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await _send_json(send, 400, "The Content-Length header is not a number.")
                return
            if too_big:
                await _send_json(send, 413, BodyTooLarge(limit).args[0])
                return
        seen = 0

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


class RequestObserver:
    """Count and time every request by route and status, log one JSON line, add security headers."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        docs = scope.get("path", "").startswith(("/docs", "/redoc"))

        async def observed_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in SECURITY_HEADERS if h[0] not in names and not (docs and h[0] ==
                                                                                       b"content-security-policy")]
                if docs:
                    extra.append(DOCS_CSP)
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or ("/static" if scope.get("path", "").startswith("/static/")
                                                         else "unmatched")
            self.metrics.observe_request(endpoint, scope.get("method", ""), status, elapsed)
            client = scope.get("client") or ("-", 0)
            if log.isEnabledFor(logging.INFO):  # the line costs a JSON encode per request; skip it when unseen
                log.info(json.dumps({"method": scope.get("method"), "path": scope.get("path"), "endpoint": endpoint,
                                     "status": status, "ms": round(elapsed * 1000, 2), "client": client[0]}))


class StartupErrorLine:
    """Replace the traceback that a failed startup would print with its one-line reason."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def clean_send(message: dict) -> None:
            line = getattr(self.state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and line:
                message = {**message, "message": line}
            await send(message)

        await self.app(scope, receive, clean_send)
