"""Service benchmark: `POST /predict` (a drawn-digit PNG) and `POST /read` (a 4-digit strip) through a real
uvicorn on loopback, 1 and 2 workers, driven by Debian's `wrk` (Lua script `wrk_post.lua`) at several
concurrency levels: p50/p99 latency and requests/s, with the error count (a level counts only at zero errors).

The load generator shares the machine's cores with the server, so figures are a floor for a separate client.
The model: `models/production` when present, else the training benchmark's cached improved CNN, else an
untrained improved CNN (speed does not depend on the weights), exported with the energy detector. The cost of
the not-a-digit score: `/predict` on 1 worker with that model and with the same graph without its score output,
server against server in alternating rounds so that both see the same machine load.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import CACHE_DIR, ROOT, summarize, target, write_result

log = logging.getLogger(__name__)

FULL = {"workers": [1, 2], "concurrency": [1, 4, 16, 64], "duration_s": 5, "repeats": 2,
        "detector_rounds": 3, "detector_concurrency": [1, 16]}
SMOKE = {"workers": [1, 2], "concurrency": [1, 4], "duration_s": 1, "repeats": 1,
         "detector_rounds": 1, "detector_concurrency": [1]}
LUA = Path(__file__).with_name("wrk_post.lua")


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _drawing(digits: np.ndarray) -> np.ndarray:
    """MNIST digits side by side as a 280-px-high canvas-like drawing: dark ink on white."""
    strip = np.concatenate(list(digits), axis=1)
    big = np.kron(strip, np.ones((10, 10), dtype=np.uint8))
    return 255 - big


def _multipart(png: bytes, path: Path) -> str:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"digit.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    path.write_bytes(head + png + f"\r\n--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}"


def _model_dir(tmp: Path) -> tuple[Path, str]:
    prod = ROOT / "models" / "production"
    if (prod / "spec.json").is_file():
        return prod, "models/production"
    import torch

    from cnn_ocr.config import load_params
    from cnn_ocr.export import export_onnx
    from cnn_ocr.models import build
    from cnn_ocr.ood.graph import Detector
    from cnn_ocr.spec import OodBlock, build_spec, write_spec

    net = build("improved_cnn", load_params().models.improved_cnn)
    cached = sorted(CACHE_DIR.glob("improved_cnn-seed*.pt"))
    if cached:
        net.load_state_dict(torch.load(cached[0], map_location="cpu"))
    folder = tmp / "model"
    folder.mkdir()
    threshold = -1e9  # only the cost is measured here: a threshold that refuses nothing
    export_onnx(net.eval(), "improved_cnn", folder / "model.onnx", detector=Detector("energy", threshold))
    write_spec(folder, build_spec(1.0, {"name": "benchmark-cnn", "version": "1", "family": "improved_cnn"},
                                  OodBlock("energy", threshold)))
    return folder, f"improved_cnn ({'trained, ' + cached[0].name if cached else 'untrained'}), energy detector"


def _without_detector(model_dir: Path, tmp: Path) -> Path | None:
    """The same model without its not-a-digit score: the graph cut down to the probabilities' output and the
    spec without its `ood` block; None when the model has no detector."""
    import dataclasses

    import onnx.utils

    from cnn_ocr.spec import ONNX_FILE, read_spec, write_spec

    spec = read_spec(model_dir)
    if spec.ood is None:
        return None
    folder = tmp / "model-without-detector"
    folder.mkdir()
    onnx.utils.extract_model(str(model_dir / ONNX_FILE), str(folder / ONNX_FILE), [spec.input_name],
                             [spec.output_name])
    write_spec(folder, dataclasses.replace(spec, ood=None))
    return folder


def _detector_cost(model_dir: Path, tmp: Path, body: Path, ctype: str, cfg: dict[str, Any]) -> dict[str, Any] | None:
    """`/predict` levels on 1 worker with and without the detector, in alternating rounds; medians per level."""
    without = _without_detector(model_dir, tmp)
    if without is None:
        return None
    rounds: dict[str, list[list[dict[str, Any]]]] = {"with_detector": [], "without_detector": []}
    for _ in range(cfg["detector_rounds"]):
        for name, folder in (("with_detector", model_dir), ("without_detector", without)):
            proc, base = _start(folder, 1, tmp)
            try:
                rounds[name].append([_wrk(base + "/predict", body, ctype, c, cfg["duration_s"])
                                     for c in cfg["detector_concurrency"]])
            finally:
                _stop(proc)
    out: dict[str, Any] = {}
    for name, runs in rounds.items():
        out[name] = [{"concurrency": c, "errors": sum(r[i]["errors"] for r in runs),
                      **{k: summarize([r[i][k] for r in runs]) for k in ("requests_per_s", "p50_ms", "p99_ms")}}
                     for i, c in enumerate(cfg["detector_concurrency"])]
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(model_dir: Path, workers: int, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "OCR_MODEL_PATH": str(model_dir), "OCR_RELOAD_INTERVAL_S": "0",
           "OCR_FEEDBACK_DB": str(tmp / f"feedback-{workers}.db"), "OCR_FEEDBACK_RATE_LIMIT": "0"}
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with code {proc.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.2)
    _stop(proc)
    raise RuntimeError("the service did not become healthy within 90 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wrk(url: str, body: Path, content_type: str, conns: int, duration_s: int) -> dict[str, Any]:
    env = {**os.environ, "BENCH_BODY_FILE": str(body), "BENCH_CONTENT_TYPE": content_type}
    # One event-loop thread is plenty for loopback and leaves the server the most CPU.
    cmd = ["wrk", "-t", "1", "-c", str(conns), "-d", f"{duration_s}s", "--timeout", "5s",
           "-s", str(LUA), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration_s + 60, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    raw = json.loads(line)
    errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
    return {"requests_per_s": raw["requests"] / (raw["duration_us"] / 1e6), "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "requests": raw["requests"], "errors": errors}


def _bodies(tmp: Path) -> dict[str, tuple[str, Path, str]]:
    from cnn_ocr.config import load_params
    from cnn_ocr.data import ensure_prepared, load_version

    params = load_params()
    ensure_prepared(params.data)
    test_x = load_version("v2.0", params.data).test_x
    out = {}
    for name, path, digits in (("predict_png", "/predict", test_x[:1]), ("read_4_digits", "/read", test_x[1:5])):
        body = tmp / f"{name}.body"
        out[name] = (path, body, _multipart(_png(_drawing(digits)), body))
    return out


def _level(url: str, body: Path, ctype: str, conns: int, cfg: dict[str, Any]) -> dict[str, Any]:
    reps = [_wrk(url, body, ctype, conns, cfg["duration_s"]) for _ in range(cfg["repeats"])]
    return {"concurrency": conns, "errors": sum(r["errors"] for r in reps), "requests": sum(r["requests"] for r in reps),
            **{k: summarize([r[k] for r in reps]) for k in ("requests_per_s", "p50_ms", "p99_ms")}}


def _targets(fig: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    one = fig["runs"].get("workers_1", {}).get("predict_png")
    if one:
        low = min(one, key=lambda lv: lv["concurrency"])
        out.append(target(f"POST /predict p50 at concurrency {low['concurrency']}", low["p50_ms"]["median"], 5.0, "ms",
                          False))
    two = fig["runs"].get("workers_2", {}).get("predict_png")
    if two:
        clean = [lv["requests_per_s"]["median"] for lv in two if lv["errors"] == 0]
        out.append(target("POST /predict sustained req/s, 2 workers, zero errors", max(clean) if clean else None, 800,
                          "req/s", True))
    cost = fig.get("detector_cost")
    if cost:
        w, wo = cost["with_detector"], cost["without_detector"]
        low, high = 0, len(w) - 1
        out.append(target(f"POST /predict p50 at concurrency {w[low]['concurrency']}, 1 worker, with the detector",
                          w[low]["p50_ms"]["median"], wo[low]["p50_ms"]["median"] * 1.10, "ms", False,
                          "limit: the same run without the detector, +10 %"))
        out.append(target(f"POST /predict req/s at concurrency {w[high]['concurrency']}, 1 worker, with the detector",
                          w[high]["requests_per_s"]["median"], wo[high]["requests_per_s"]["median"] * 0.90, "req/s",
                          True, "limit: the same run without the detector, -10 %"))
    return out


def run(smoke: bool = False, out_dir: Path | None = None) -> Path:
    """Run the service benchmark and write `service.json`; returns its path."""
    if shutil.which("wrk") is None:
        raise RuntimeError("the service benchmark needs `wrk` (Debian package wrk; `make system-deps` installs it)")
    cfg = SMOKE if smoke else FULL
    fig: dict[str, Any] = {"runs": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir, fig["model"] = _model_dir(tmp)
        bodies = _bodies(tmp)
        fig["bodies_bytes"] = {name: body.stat().st_size for name, (_, body, _) in bodies.items()}
        for workers in cfg["workers"]:
            proc, base = _start(model_dir, workers, tmp)
            try:
                fig["runs"][f"workers_{workers}"] = {
                    name: [_level(base + path, body, ctype, c, cfg) for c in cfg["concurrency"]]
                    for name, (path, body, ctype) in bodies.items()}
            finally:
                _stop(proc)
        _, body, ctype = bodies["predict_png"]
        fig["detector_cost"] = _detector_cost(model_dir, tmp, body, ctype, cfg)
    from benchmarks.common import RESULTS_DIR

    settings = {"smoke": smoke, **cfg, "load_generator": "wrk (same machine)"}
    return write_result("service", "smoke" if smoke else "full", fig, _targets(fig), "cpu", settings,
                        out_dir or RESULTS_DIR)
