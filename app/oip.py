"""The Open Inference Protocol (v2 REST), as spoken by KServe, Triton and MLServer, for the serving model.

The tensor is the model's own input: `[N, 1, 28, 28]` FP32, already normalized (what the ONNX graph takes,
no decoding or preprocessing here). Outputs: `probabilities` `[N, 10]` FP32 (softmax of logits / the
model's temperature) and, when the graph has one, `ood_score` `[N]`. Tensor data comes as JSON (`data`,
flat or nested, row-major) or as Triton's binary tensor data extension (raw little-endian bytes after the
JSON header, whose length is the `Inference-Header-Content-Length` header). Errors are `{"error": "..."}`
with 400 (bad request) or 404 (unknown model), as the protocol says.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app.deps import MaybeService
from app.model_store import LoadedModel
from app.service import OcrService
from cnn_ocr.preprocess import IMAGE_SIZE

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

PLATFORM = "onnxruntime_onnx"
PROBABILITIES = "probabilities"
OOD_SCORE = "ood_score"  # the graph output a model with an out-of-distribution score carries
MAX_BATCH = 1024
HEADER_LENGTH = "inference-header-content-length"
_SHAPE = [-1, 1, IMAGE_SIZE, IMAGE_SIZE]
_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"],
           "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                          "datatype": {"type": "string", "example": "FP32"}, "parameters": {"type": "object"},
                          "data": {"type": "array", "description": "row-major values (flat or nested)"}}}
INFER_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["inputs"],
    "properties": {"id": {"type": "string"}, "parameters": {"type": "object"}, "inputs": {"type": "array", "items": _TENSOR},
                   "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                       "name": {"type": "string"}, "parameters": {"type": "object"}}}}}}}}}}


class ProtocolError(Exception):
    """A request the protocol answers with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _show(value: object) -> str:
    """A client-sent value for an error message, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _model(service: OcrService | None, name: str, version: str | None = None) -> LoadedModel:
    model = service.store.current if service is not None else None
    if model is None:
        raise ProtocolError(404, f"Model {_show(name)} is not available: no model is loaded yet.")
    if name != model.info.name:
        raise ProtocolError(404, f"Unknown model {_show(name)}; this server serves {model.info.name!r}.")
    if version is not None and version != model.info.version:
        raise ProtocolError(404, f"Model {_show(name)} has no version {_show(version)}; "
                                 f"it serves version {model.info.version!r}.")
    return model


def _output_names(model: LoadedModel) -> list[str]:
    graph_outputs = {o.name for o in model.session.get_outputs()}
    return [PROBABILITIES, *([OOD_SCORE] if OOD_SCORE in graph_outputs else [])]


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    """The protocol's model metadata: name, versions, platform, input and output tensors."""
    outputs = [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, 10]}]
    if OOD_SCORE in _output_names(model):
        outputs.append({"name": OOD_SCORE, "datatype": "FP32", "shape": [-1]})
    return {"name": model.info.name, "versions": [model.info.version], "platform": PLATFORM,
            "inputs": [{"name": model.spec.input_name, "datatype": "FP32", "shape": _SHAPE}], "outputs": outputs}


def _params(obj: dict[str, Any]) -> dict[str, Any]:
    """The `parameters` object of a request or tensor ({} when absent)."""
    value = obj.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(400, "'parameters' must be a JSON object.")
    return value


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON inference header and the binary tensor bytes that follow it (if any)."""
    size = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ProtocolError(400, f"{HEADER_LENGTH} must be the byte length of the JSON header (at most {len(body)}).")
        size = int(header_length)
    try:
        request = orjson.loads(body[:size])
    except orjson.JSONDecodeError:
        raise ProtocolError(400, "The request body is not a JSON inference request.") from None
    if not isinstance(request, dict):
        raise ProtocolError(400, "The inference request must be a JSON object.")
    return request, body[size:]


def _input_tensor(request: dict[str, Any], binary: bytes, input_name: str) -> np.ndarray:
    """The one input tensor, checked: name, FP32, shape [N, 1, 28, 28], data size, finite values."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(400, f"'inputs' must hold exactly one tensor, named {input_name!r}.")
    tensor = inputs[0]
    if tensor.get("name") != input_name:
        raise ProtocolError(400, f"Unknown input {_show(tensor.get('name'))}; the model takes {input_name!r}.")
    if tensor.get("datatype") != "FP32":
        raise ProtocolError(400, f"Input {input_name!r} must have datatype FP32, not {_show(tensor.get('datatype'))}.")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(d, int) for d in shape)
            or shape[1:] != _SHAPE[1:] or not 1 <= shape[0] <= MAX_BATCH):
        raise ProtocolError(400, f"Input {input_name!r} must have shape [N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}] with "
                                 f"1 <= N <= {MAX_BATCH}, not {_show(shape)}.")
    count = int(np.prod(shape))
    size = _params(tensor).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * 4 or len(binary) < size:
            raise ProtocolError(400, f"Input {input_name!r} needs {count * 4} bytes of binary data; "
                                     f"binary_data_size is {_show(size)} and {len(binary)} bytes follow the header.")
        array = np.frombuffer(binary[:size], dtype="<f4")
    else:
        try:
            array = np.asarray(tensor.get("data"), dtype=np.float32).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise ProtocolError(400, f"Input {input_name!r}: 'data' must be a list of numbers.") from None
        if array.size != count:
            raise ProtocolError(400, f"Input {input_name!r}: shape {shape} needs {count} values, 'data' has {array.size}.")
    if not np.isfinite(array).all():
        raise ProtocolError(400, f"Input {input_name!r} holds NaN or infinite values.")
    return array.reshape(shape).astype(np.float32, copy=False)


def _requested(request: dict[str, Any], available: list[str]) -> dict[str, bool]:
    """Output name -> send as binary data, for the outputs asked for (all when none are named)."""
    all_binary = bool(_params(request).get("binary_data_output", False))
    asked = request.get("outputs")
    if asked is None:
        return {name: all_binary for name in available}
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise ProtocolError(400, "'outputs' must be a list of {\"name\": ...} objects.")
    wanted: dict[str, bool] = {}
    for output in asked:
        if output.get("name") not in available:
            raise ProtocolError(400, f"Unknown output {_show(output.get('name'))}; the model has {available}.")
        wanted[output["name"]] = bool(_params(output).get("binary_data", all_binary))
    return wanted


def run_model(model: LoadedModel, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """FP32 outputs by name for normalized input `x` [N, 1, 28, 28]."""
    graph = [model.spec.output_name, *([OOD_SCORE] if OOD_SCORE in names else [])]
    values = model.session.run(graph, {model.spec.input_name: x})
    result = {PROBABILITIES: model.spec.probabilities(np.asarray(values[0], np.float64)).astype(np.float32)}
    if OOD_SCORE in names:
        result[OOD_SCORE] = np.asarray(values[1], np.float32).reshape(-1)
    return result


def _response(model: LoadedModel, request: dict[str, Any], outputs: dict[str, np.ndarray],
              binary: dict[str, bool]) -> Response:
    body: dict[str, Any] = {"model_name": model.info.name, "model_version": model.info.version, "outputs": []}
    if isinstance(request.get("id"), str):
        body["id"] = request["id"]
    blobs = []
    for name, as_binary in binary.items():
        array = outputs[name]
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(array.shape)}
        if as_binary:
            blob = array.astype("<f4").tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.reshape(-1).tolist()
        body["outputs"].append(tensor)
    header = orjson.dumps(body)
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(header))})


@router.get("", summary="Server metadata")
def server_metadata(request: Request) -> dict:
    """Name, version and the protocol extensions this server supports."""
    return {"name": request.app.title, "version": request.app.version, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", summary="Server liveness")
def live() -> dict:
    """200 while the process answers."""
    return {"live": True}


@router.get("/health/ready", summary="Server readiness")
def ready(service: MaybeService) -> JSONResponse:
    """200 when a model is loaded, 400 (the protocol's "false") otherwise."""
    is_ready = service is not None and service.store.current is not None
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 400)


@router.get("/models/{name}", summary="Model metadata")
@router.get("/models/{name}/versions/{version}", summary="Model metadata of one version")
def metadata(name: str, service: MaybeService, version: str | None = None) -> JSONResponse:
    """Tensor names, datatypes and shapes of the serving model."""
    try:
        return JSONResponse(model_metadata(_model(service, name, version)))
    except ProtocolError as exc:
        return _error(exc.status, str(exc))


@router.get("/models/{name}/ready", summary="Model readiness")
@router.get("/models/{name}/versions/{version}/ready", summary="Readiness of one model version")
def model_ready(name: str, service: MaybeService, version: str | None = None) -> JSONResponse:
    """200 when this model (and version) is the one being served."""
    try:
        _model(service, name, version)
    except ProtocolError as exc:
        return _error(exc.status, str(exc))
    return JSONResponse({"name": name, "ready": True})


@router.post("/models/{name}/infer", summary="Inference", openapi_extra=INFER_BODY)
@router.post("/models/{name}/versions/{version}/infer", summary="Inference on one model version", openapi_extra=INFER_BODY)
async def infer(name: str, request: Request, service: MaybeService, version: str | None = None) -> Response:
    """Probabilities (and the ood score, when the model has one) for a batch of normalized 28x28 inputs."""
    try:
        model = _model(service, name, version)
        parsed, binary = _split_body(await request.body(), request.headers.get(HEADER_LENGTH))
        x = _input_tensor(parsed, binary, model.spec.input_name)
        wanted = _requested(parsed, _output_names(model))
    except ProtocolError as exc:
        return _error(exc.status, str(exc))
    outputs = await run_in_threadpool(run_model, model, x, list(wanted))
    return _response(model, parsed, outputs, wanted)
