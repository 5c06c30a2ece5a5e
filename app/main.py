"""The OCR service: wiring only. `uvicorn app.main:app` or `ocr serve` runs it.

The model is loaded in the lifespan (never at import); a background task checks the model source every
`OCR_RELOAD_INTERVAL_S` seconds and swaps in a new version when it passes its smoke test. What is built
here is kept on `app.state`, which only `app.deps` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from app import oip
from app.docs import router as docs_router
from app.errors import install_error_handlers
from app.metrics import Metrics
from app.middleware import BodyLimit, RequestObserver, StartupErrorLine, body_limit_for
from app.model_store import ModelInfo, ModelStore, NoModelError, ReloadResult
from app.ratelimit import RateLimiter
from app.routes import STATIC_DIR, router
from app.service import OcrService
from app.settings import Settings, get_settings
from cnn_ocr.feedback import FeedbackStore

log = logging.getLogger("ocr.app")


async def _poll(reload_now: Callable[[], ReloadResult], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(reload_now)
        except Exception:  # a broken registry must never end the polling
            log.exception("model check failed")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the feedback store, load the model (or fail with one line), start the model poller."""
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics

    def on_change(info: ModelInfo) -> None:
        metrics.set_model(info.name, info.version, info.alias, info.source)

    store = ModelStore(settings, on_change=on_change)

    def reload_now() -> ReloadResult:
        result = store.reload()
        metrics.observe_reload(result.status)
        return result

    first = await run_in_threadpool(reload_now)
    if store.current is None and not settings.allow_start_without_model:
        app.state.startup_error = first.detail
        raise NoModelError(first.detail)
    if store.current is None:
        log.error("starting without a model: %s", first.detail)
    feedback = FeedbackStore(settings.feedback_db, settings.prediction_retention_s)
    app.state.reload_now = reload_now
    app.state.service = OcrService(settings, store, feedback, metrics)
    poller = asyncio.create_task(_poll(reload_now, settings.reload_interval_s)) if settings.reload_interval_s > 0 else None
    try:
        yield
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        app.state.service = None
        feedback.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI app (cheap: nothing is loaded until the lifespan starts)."""
    settings = settings or get_settings()
    app = FastAPI(title="cnn-ocr-app", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Handwritten-digit OCR served with ONNX Runtime. Errors are "
                              "`{\"detail\": \"<one sentence>\"}`.")
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.service = None
    app.state.feedback_limiter = RateLimiter(settings.feedback_rate_limit)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(oip.router)
    app.include_router(docs_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"])
    app.add_middleware(BodyLimit, limit_for=body_limit_for(settings))
    app.add_middleware(RequestObserver, metrics=app.state.metrics)
    app.add_middleware(StartupErrorLine, state=app.state)
    return app


app = create_app()
