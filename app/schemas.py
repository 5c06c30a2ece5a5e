"""Request and response bodies of the HTTP API (they also document it at /docs)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

Status = Literal["ok", "uncertain", "no_digit"]
IMAGE_FIELDS = "an image as multipart field `file`, or JSON {\"image\": base64 or data: URL}, or JSON {\"pixels\": 28x28}"


class ModelRef(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    prediction_id: str = Field(description="Send it back with POST /feedback to correct the answer.")
    digit: int | None = Field(description="Best guess (also for `uncertain`); null for `no_digit`.")
    confidence: float = Field(description="Calibrated probability of `digit` (0 for `no_digit`).")
    probabilities: list[float] = Field(description="Calibrated probability of each digit 0-9.")
    status: Status
    model: ModelRef
    reason: str | None = Field(None, description="Why there is no digit (blank, too_small, dot, not_a_digit).")
    ood_score: float | None = Field(None, description="Not-a-digit score (below the model's threshold: not a "
                                    "digit); null for a model without a detector or without a mark.")
    input_image: str | None = Field(None, description="The 28x28 image the model saw, as a PNG data: URL.")


class BatchResponse(BaseModel):
    results: list[PredictResponse]


class ReadDigit(BaseModel):
    digit: int | None = Field(description="The digit; null for a mark that is not a digit (written `?` in text).")
    confidence: float
    status: Status
    reason: str | None = Field(None, description="`not_a_digit` for a mark that is not a digit.")
    ood_score: float | None = Field(None, description="Not-a-digit score; null for a model without a detector.")
    box: list[int] = Field(description="[x, y, w, h] in the uploaded image's pixels.")
    prediction_id: str = Field(description="Id of this digit alone, for POST /feedback.")
    input_image: str | None = None


class ReadLine(BaseModel):
    text: str = Field(description="The line's digits left to right, `?` for each mark that is not a digit.")
    box: list[int] = Field(description="[x, y, w, h] around the line's digits, in the uploaded image's pixels.")
    status: Status
    digits: list[ReadDigit]
    source: Literal["segmentation", "recognizer"] = Field(
        "segmentation", description="Who read the line: `segmentation` (split into digits, each classified) or "
        "`recognizer` (the line recognizer, kept where segmentation was unsure; `OCR_RECOGNIZER_PATH`).")


class ReadResponse(BaseModel):
    prediction_id: str
    text: str = Field(description="Each line's digits left to right, `?` for each mark that is not a digit; "
                      "lines joined by newlines, top to bottom.")
    status: Status
    digits: list[ReadDigit] = Field(description="Every digit, line after line.")
    model: ModelRef
    kind: Literal["row", "page"] = Field("row", description="`row`: one line (with `mode=auto`: two or more "
                                         "digits); `page`: several lines.")
    lines: list[ReadLine] = Field(default_factory=list, description="The lines of digits, top to bottom, and "
                                  "left to right among lines side by side.")


class AutoDigitResponse(PredictResponse):
    kind: Literal["digit"] = Field("digit", description="`mode=auto`: the image held one digit (or none).")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: Annotated[str, Field(min_length=1, max_length=100)]
    label: Annotated[StrictInt, Field(ge=0, le=9)] | Literal["not_a_digit"] = Field(
        description="The right digit, or \"not_a_digit\" when the input is not a digit at all.")


class FeedbackResponse(BaseModel):
    stored: bool
    prediction_id: str
    label: int | Literal["not_a_digit"]
    predicted: int | None
    model_version: str | None


class OodInfo(BaseModel):
    detector: str = Field(description="msp, energy or mahalanobis.")
    threshold: float = Field(description="A mark scoring below it is not a digit.")
    threshold_source: Literal["spec", "OCR_OOD_THRESHOLD"] = Field(description="Where the threshold comes from.")


class RecognizerInfo(BaseModel):
    loaded: bool = Field(description="Whether /read also reads each line with the line recognizer.")
    source: str = Field(description="OCR_RECOGNIZER_PATH: a folder or models:/NAME@ALIAS.")
    detail: str | None = Field(None, description="Why it is not loaded (null when it is).")
    test_string_accuracy: float | None = Field(None, description="Share of test strings it read exactly.")
    parity_max_abs_diff: float | None = Field(None, description="Largest ONNX-vs-PyTorch gap at export.")


class ModelResponse(BaseModel):
    name: str
    version: str
    alias: str | None
    run_id: str | None
    family: str | None = Field(description="The model family's id, e.g. improved_cnn.")
    family_name: str | None = Field(description="The family in words, e.g. \"improved CNN\".")
    test_accuracy: float | None = Field(description="Share of the MNIST test digits read right (0-1); null if "
                                        "the model folder does not say.")
    trained_at: str | None = Field(description="When the training run started (ISO 8601, UTC); null if unknown.")
    data_version: str | None
    summary: str = Field(description="The model in words, e.g. \"improved CNN, trained 2026-11-26, 99.6 % on "
                         "MNIST test\" (what is unknown is left out).")
    details: str = Field(description="The exact version: registered name and version, alias, run, data version.")
    source: str
    loaded_at: str
    uncertain_threshold: float
    ood: OodInfo | None = Field(description="The not-a-digit detector and the threshold in force; null without one.")
    recognizer: RecognizerInfo | None = Field(None, description="The line recognizer /read uses where "
                                              "segmentation is unsure; null when OCR_RECOGNIZER_PATH is unset.")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: ModelRef


class ReloadResponse(BaseModel):
    status: Literal["reloaded", "unchanged", "refused"]
    detail: str
    model: ModelRef | None


class ErrorResponse(BaseModel):
    detail: str


def _pixels_schema() -> dict:
    row = {"type": "array", "minItems": 28, "maxItems": 28, "items": {"type": "number", "minimum": 0, "maximum": 255}}
    return {"type": "array", "minItems": 28, "maxItems": 28, "items": row}


def image_body(batch: bool = False) -> dict:
    """OpenAPI requestBody of the image endpoints (multipart or JSON), for `openapi_extra`."""
    if batch:
        multipart = {"type": "object", "required": ["files"], "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}
        return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": multipart}}}}
    multipart = {"type": "object", "required": ["file"],
                 "properties": {"file": {"type": "string", "format": "binary"}}}
    json_body = {"oneOf": [
        {"type": "object", "required": ["image"], "additionalProperties": False,
         "properties": {"image": {"type": "string", "description": "base64, or a data:image/...;base64 URL"}}},
        {"type": "object", "required": ["pixels"], "additionalProperties": False,
         "properties": {"pixels": _pixels_schema()}},
    ]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": multipart},
                                                           "application/json": {"schema": json_body}}}}


ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    400: "The file is not a readable image.", 413: "The file or image is too large.",
    415: "Unsupported file type or content type.", 422: "Bad JSON shape or values.",
    503: "No model is loaded yet."}.items()}
