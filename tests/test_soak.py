"""A bounded soak on loopback: a real uvicorn server held at a fixed request rate; zero errors, p99 latency
reported, resident memory growth under 10 % after warm-up.

Short by default (CI): 20 s at 40 requests/s. Longer: `OCR_SOAK_S=180 OCR_SOAK_RPS=40 pytest tests/test_soak.py -s`.
The mix: drawn-digit PNG uploads to /predict (70 %), JSON pixels (15 %), 4-digit strips to /read (10 %),
feedback (5 %).
"""

from __future__ import annotations

import os
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
from image_files import png
from live_server import live_server

pytestmark = pytest.mark.api
DURATION_S = float(os.environ.get("OCR_SOAK_S", "20"))
RATE = float(os.environ.get("OCR_SOAK_RPS", "40"))
CLIENTS = 4
WARMUP_FRACTION = 0.25


def _requests(digits: np.ndarray):
    drawn = [png(255 - np.kron(d, np.ones((8, 8), np.uint8))) for d in digits[:10]]
    strip = png(255 - np.concatenate([np.pad(d, 6) for d in digits[:4]], axis=1))
    pixels = [d.tolist() for d in digits[:10]]

    def one(client: httpx.Client, i: int) -> int:
        k = i % 20
        if k < 14:
            return client.post("/predict", files={"file": ("d.png", drawn[i % 10], "image/png")}).status_code
        if k < 17:
            return client.post("/predict", json={"pixels": pixels[i % 10]}).status_code
        if k < 19:
            return client.post("/read", files={"file": ("s.png", strip, "image/png")}).status_code
        pid = client.post("/predict", json={"pixels": pixels[0]}).json()["prediction_id"]
        return client.post("/feedback", json={"prediction_id": pid, "label": 7}).status_code

    return one


def _client_loop(base: str, one, offset: int, end: float, out: list) -> None:
    interval = CLIENTS / RATE
    next_at = time.monotonic() + offset * interval / CLIENTS
    i = offset
    with httpx.Client(base_url=base, timeout=30) as client:
        while next_at < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            start = time.monotonic()
            try:
                status = one(client, i)
            except httpx.HTTPError as exc:
                status = repr(exc)
            out.append((start, time.monotonic() - start, status))
            next_at += interval
            i += CLIENTS


def test_soak_holds_rate_without_errors_or_memory_growth(tmp_path, service_model_dir, mnist_splits):
    env = {"OCR_MODEL_PATH": str(service_model_dir), "OCR_FEEDBACK_DB": str(tmp_path / "f.db"),
           "OCR_FEEDBACK_RATE_LIMIT": "0"}
    with live_server(env, tmp_path / "server.log") as base:
        pid = next(c.pid for c in psutil.net_connections("inet") if c.laddr and c.laddr.port == int(base.rsplit(":", 1)[1])
                   and c.status == psutil.CONN_LISTEN)
        server = psutil.Process(pid)
        one = _requests(mnist_splits.test_x)
        start = time.monotonic()
        end, warm_at = start + DURATION_S, start + WARMUP_FRACTION * DURATION_S
        results: list = []
        threads = [threading.Thread(target=_client_loop, args=(base, one, k, end, results)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        rss: list[tuple[float, int]] = []
        while any(t.is_alive() for t in threads):
            rss.append((time.monotonic(), server.memory_info().rss))
            time.sleep(0.5)
        for t in threads:
            t.join()
        assert httpx.get(f"{base}/health").status_code == 200
    elapsed = time.monotonic() - start
    errors = [r for r in results if r[2] != 200]
    latencies = np.array([r[1] for r in results if r[0] >= warm_at]) * 1000
    baseline = next(v for t, v in rss if t >= warm_at)
    peak = max(v for t, v in rss if t >= warm_at)
    growth = (peak - baseline) / baseline
    achieved = len(results) / elapsed
    print(f"\nsoak: {len(results)} requests in {elapsed:.0f} s ({achieved:.1f}/s, target {RATE:.0f}/s), "
          f"{len(errors)} errors; latency p50 {np.percentile(latencies, 50):.1f} ms, p99 "
          f"{np.percentile(latencies, 99):.1f} ms, max {latencies.max():.1f} ms; RSS {baseline / 2**20:.1f} MiB after "
          f"warm-up -> peak {peak / 2**20:.1f} MiB ({growth:+.1%})")
    assert not errors, errors[:5]
    assert achieved >= 0.9 * RATE, f"held only {achieved:.1f} requests/s"
    assert growth < 0.10
