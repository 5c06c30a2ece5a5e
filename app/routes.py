"""HTTP endpoints. Each one parses its input, hands the work to `OcrService` in a worker thread, and
returns a response model; what it needs comes from `app.deps`, errors are raised and rendered by `app.errors`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app import schemas
from app.deps import AdminAccess, AppMetrics, FeedbackLimiter, MaybeService, Reloader, Service
from app.errors import ApiError
from app.inputs import batch_inputs, single_input
from app.service import describe_model

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})


@router.post("/predict", response_model=schemas.PredictResponse, responses=schemas.ERRORS,
             openapi_extra=schemas.image_body(), summary="Read one digit")
async def predict(request: Request, service: Service) -> dict:
    """One digit from an image: multipart `file`, JSON `image` (base64 / data: URL) or JSON `pixels`."""
    item = await single_input(request, service.settings)
    return (await run_in_threadpool(service.predict, [item]))[0]


@router.post("/predict/batch", response_model=schemas.BatchResponse, responses=schemas.ERRORS,
             openapi_extra=schemas.image_body(batch=True), summary="Read one digit from each of several images")
async def predict_batch(request: Request, service: Service) -> dict:
    """Several images as repeated multipart fields `files`; results in the same order."""
    items = await batch_inputs(request, service.settings)
    return {"results": await run_in_threadpool(service.predict, items)}


@router.post("/read", response_model=schemas.ReadResponse | schemas.AutoDigitResponse, responses=schemas.ERRORS,
             openapi_extra=schemas.image_body(), summary="Read the lines of digits of an image")
async def read(request: Request, service: Service, mode: Literal["row", "auto"] = "row") -> dict:
    """Every line of digits, top to bottom, each left to right, with their boxes (`lines`; `text` joins them
    with newlines). `mode=auto` answers an image that holds one digit as /predict does (`kind` "digit")."""
    item = await single_input(request, service.settings)
    return await run_in_threadpool(service.read_auto if mode == "auto" else service.read, item)


@router.post("/feedback", response_model=schemas.FeedbackResponse, summary="Correct an answer",
             responses={404: {"model": schemas.ErrorResponse}, 422: {"model": schemas.ErrorResponse},
                        429: {"model": schemas.ErrorResponse}})
async def feedback(body: schemas.FeedbackRequest, request: Request, service: Service,
                   limiter: FeedbackLimiter) -> dict:
    """Store the right digit for a prediction (404 when the id is unknown or expired)."""
    client = request.client.host if request.client else "-"
    wait = limiter.retry_after(client)
    if wait:
        raise ApiError(429, f"Too much feedback from this client; try again in {wait} s.", {"retry-after": str(wait)})
    return await run_in_threadpool(service.add_feedback, body.prediction_id, body.label)


@router.get("/model", response_model=schemas.ModelResponse, responses={503: {"model": schemas.ErrorResponse}})
def model(service: Service) -> dict:
    """The model being served."""
    served = service.model()
    info, ood = served.info, served.spec.ood
    return {"name": info.name, "version": info.version, "alias": info.alias, "run_id": info.run_id,
            "family": info.family, "test_accuracy": info.test_accuracy, "data_version": info.data_version,
            "trained_at": info.trained_at, **describe_model(info), "source": info.source, "loaded_at": info.loaded_at,
            "uncertain_threshold": service.settings.uncertain_threshold,
            "ood": None if ood is None else {
                "detector": ood.detector, "threshold": service.ood_threshold(served),
                "threshold_source": "spec" if service.settings.ood_threshold is None else "OCR_OOD_THRESHOLD"},
            "recognizer": service.recognizer_info()}


@router.get("/health", response_model=schemas.HealthResponse, responses={503: {"model": schemas.ErrorResponse}})
def health(service: MaybeService) -> dict | JSONResponse:
    """200 while a model is loaded, 503 otherwise."""
    current = service.store.current if service else None
    if current is None:
        return JSONResponse({"detail": "No model is loaded."}, status_code=503)
    return {"status": "ok", "model": {"name": current.info.name, "version": current.info.version}}


@router.get("/metrics", summary="Prometheus metrics")
def metrics(observed: AppMetrics) -> Response:
    """Prometheus text exposition of this process."""
    return Response(observed.render(), media_type=observed.content_type)


@router.post("/admin/reload", response_model=schemas.ReloadResponse, summary="Reload the model now",
             responses={401: {"model": schemas.ErrorResponse}, 404: {"model": schemas.ErrorResponse},
                        409: {"model": schemas.ReloadResponse}})
async def admin_reload(service: Service, _admin: AdminAccess, reload_now: Reloader) -> dict | JSONResponse:
    """Look up the model again and swap it in if it changed (409 when the new one is refused)."""
    result = await run_in_threadpool(reload_now)
    body = {"status": result.status, "detail": result.detail,
            "model": {"name": result.model.name, "version": result.model.version} if result.model else None}
    return JSONResponse(body, status_code=409) if result.status == "refused" else body
