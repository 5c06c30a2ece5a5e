"""The lifecycle a user runs, end to end: `make lifecycle PROFILE=quick` (data under DVC, the three families
trained and tracked, tuning, the ensemble, selection, registration, ONNX export, the report), then
`ocr serve` on the exported folder answers real MNIST test digits correctly over HTTP.

Run by `make test` under CI (`-m lifecycle`); it writes what the lifecycle writes (data/, outputs/quick/).
Locally: `python -m pytest -m lifecycle tests/test_lifecycle.py` (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest
from image_files import png
from live_server import ROOT, free_port, wait_until

PRODUCTION = ROOT / "outputs" / "quick" / "production"
DIGITS = 20


def _healthy(base: str, proc: subprocess.Popen, log) -> bool:
    assert proc.poll() is None, log.read_text()[-3000:]
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.lifecycle
@pytest.mark.timeout(1800)  # about 2.5 min on 2 idle cores; data preparation and a loaded CI runner add more
def test_quick_lifecycle_then_its_exported_model_answers_over_http(tmp_path):
    from cnn_ocr.config import load_params
    from cnn_ocr.data import load_version

    log_path = tmp_path / "lifecycle.log"
    with open(log_path, "wb") as log:
        done = subprocess.run(["make", "lifecycle", "PROFILE=quick"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              timeout=1500)
    assert done.returncode == 0, log_path.read_text()[-4000:]
    spec = json.loads((PRODUCTION / "spec.json").read_text())["model"]
    assert spec["alias"] == "production" and (PRODUCTION / "model.onnx").is_file()

    test = load_version("v2.0", load_params(ROOT / "params.yaml").data)
    port, serve_log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "OCR_MODEL_PATH": str(PRODUCTION), "OCR_FEEDBACK_DB": str(tmp_path / "feedback.db")}
    with open(serve_log, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", "from cnn_ocr.cli import app; app()", "serve", "--port",
                                 str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(base, proc, serve_log), "the exported model served", 120, 0.2)
        served = httpx.get(f"{base}/model", timeout=10).json()
        answers = [httpx.post(f"{base}/predict", files={"file": ("d.png", png(255 - test.test_x[i]), "image/png")},
                              timeout=30).json() for i in range(DIGITS)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert (served["name"], served["version"]) == (spec["name"], str(spec["version"]))
    right = [a["digit"] == int(test.test_y[i]) for i, a in enumerate(answers)]
    print(f"\nquick lifecycle: {spec['name']} v{spec['version']} ({spec['family']}) served; "
          f"{sum(right)}/{DIGITS} MNIST test digits read right over HTTP")
    assert right[0] and sum(right) >= DIGITS - 2, answers
