"""What the routes need, as FastAPI dependencies: the one place that reads the app's state.

`create_app` and the lifespan put the settings, metrics, rate limiter, service and reload function on
`app.state`; routes declare what they use (`service: Service`, `metrics: AppMetrics`, ...) and never look
there themselves. Tests replace any of them with `app.dependency_overrides[get_service] = ...`.

Every dependency is `async def` so FastAPI calls it on the event loop, without a worker-thread hop.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from app.errors import ApiError
from app.metrics import Metrics
from app.model_store import ReloadResult
from app.ratelimit import RateLimiter
from app.service import OcrService
from app.settings import Settings


async def app_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


async def app_metrics(request: Request) -> Metrics:
    """The app's Prometheus metrics."""
    return request.app.state.metrics


async def feedback_limiter(request: Request) -> RateLimiter:
    """The per-client limit on feedback posts."""
    return request.app.state.feedback_limiter


async def optional_service(request: Request) -> OcrService | None:
    """The service object, or None before the lifespan has created it (and after it ended)."""
    return getattr(request.app.state, "service", None)


async def get_service(service: Annotated[OcrService | None, Depends(optional_service)]) -> OcrService:
    """The service object; a 503 while the app is still starting."""
    if service is None:
        raise ApiError(503, "The service is starting; try again shortly.")
    return service


async def model_reloader(request: Request) -> Callable[[], ReloadResult]:
    """The function that checks the model source and swaps in a new version (blocking: call it in a thread)."""
    return request.app.state.reload_now


async def require_admin(settings: Annotated[Settings, Depends(app_settings)],
                        authorization: Annotated[str | None, Header()] = None) -> None:
    """Let the request through only with the configured bearer token; 404 when admin is off, else 401."""
    token = settings.admin_token
    if not token:
        raise ApiError(404, "Admin endpoints are disabled; set OCR_ADMIN_TOKEN to enable them.")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "A valid admin token is required (Authorization: Bearer <token>).",
                       {"www-authenticate": "Bearer"})


AppSettings = Annotated[Settings, Depends(app_settings)]
AppMetrics = Annotated[Metrics, Depends(app_metrics)]
FeedbackLimiter = Annotated[RateLimiter, Depends(feedback_limiter)]
MaybeService = Annotated[OcrService | None, Depends(optional_service)]
Service = Annotated[OcrService, Depends(get_service)]
Reloader = Annotated[Callable[[], ReloadResult], Depends(model_reloader)]
AdminAccess = Annotated[None, Depends(require_admin)]
