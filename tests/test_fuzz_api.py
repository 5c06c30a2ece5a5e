"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis + hypothesis).

A real uvicorn server on loopback receives schema-conforming (positive) and schema-violating (negative)
requests for every operation. Bounded: `OCR_FUZZ_EXAMPLES` examples per operation and mode (default 50).
Zero 5xx, the server stays up, and every error is JSON with a one-sentence `detail`.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import httpx
import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from live_server import live_server

pytestmark = pytest.mark.api
EXAMPLES = int(os.environ.get("OCR_FUZZ_EXAMPLES", "50"))
TOKEN = "fuzz-token"


def check_response(status: int, body: object, label: str) -> None:
    """No 5xx; an error is a JSON object whose `detail` is one short sentence."""
    assert status < 500, f"{label}: {status} {body!r:.300}"
    if status < 400:
        return
    key = "error" if " /v2" in label else "detail"  # the Open Inference Protocol's own error shape
    assert isinstance(body, dict) and isinstance(body.get(key), str), f"{label}: {status} {body!r:.300}"
    detail = body[key]
    assert detail and "\n" not in detail and "Traceback" not in detail and len(detail) <= 300, f"{label}: {detail!r}"
    assert detail.rstrip(")").endswith((".", "?")), f"{label}: not a sentence: {detail!r}"
    if status != 409:  # a refused reload also names the status and the model still served
        assert list(body) == [key], f"{label}: {body!r:.300}"


def fuzz_operation(operation, mode, base: str, session: requests.Session, seen: Counter) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call(base_url=base, session=session, timeout=30)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        seen[response.status_code] += 1
        check_response(response.status_code, body, f"{mode.name} {case.method} {case.formatted_path}")

    try:
        run()
    except Unsatisfiable:  # nothing to violate (e.g. a GET without parameters in negative mode)
        seen["no negative cases"] += 1


def test_api_fuzzed_from_its_openapi_schema(tmp_path, service_model_dir):
    import schemathesis
    from schemathesis import GenerationMode

    env = {"OCR_MODEL_PATH": str(service_model_dir), "OCR_FEEDBACK_DB": str(tmp_path / "fb.db"),
           "OCR_ADMIN_TOKEN": TOKEN, "OCR_FEEDBACK_RATE_LIMIT": "0"}
    seen: Counter = Counter()
    start = time.monotonic()
    with live_server(env, tmp_path / "server.log") as base, requests.Session() as session:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 8
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz_operation(operation, mode, base, session, seen)
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]
    skipped = seen.pop("no negative cases", 0)
    total = sum(seen.values())
    print(f"\nfuzzed {len(operations)} operations: {total} requests in {time.monotonic() - start:.0f} s, "
          f"status codes {dict(sorted(seen.items()))}, 5xx: {sum(v for k, v in seen.items() if k >= 500)}; "
          f"{skipped} operation(s) with nothing to violate")
    assert total >= len(operations) * 2 * min(EXAMPLES, 5)
