"""A real uvicorn process serving `app.main:app` on a free loopback port, for reload and browser tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(env: dict[str, str], log_path: Path, timeout_s: float = 60.0):
    """Start uvicorn with `env` added to the environment; yield its base URL; stop it (SIGTERM) at the end."""
    port = free_port()
    full_env = {**os.environ, "OCR_RELOAD_INTERVAL_S": "0", **env}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
             "--no-access-log"], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not healthy after {timeout_s} s: {log_path.read_text()[-2000:]}")
                time.sleep(0.1)
            yield base
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def hammer(base: str, pixels: list, stop: threading.Event, results: list) -> None:
    """POST /predict in a loop until `stop` is set; append (sent at, status or error, model version)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                r = client.post("/predict", json={"pixels": pixels})
                version = r.json()["model"]["version"] if r.status_code == 200 else None
                results.append((sent, r.status_code, version))
            except httpx.HTTPError as exc:
                results.append((sent, repr(exc), None))


def wait_until(check: Callable[[], object], what: str, timeout_s: float = 30.0, every_s: float = 0.02):
    """Poll `check` until it returns something truthy (returned); fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout_s:g} s")
        time.sleep(every_s)
    return found


def metric(base: str, series: str) -> float:
    """The value of one series in the service's /metrics, e.g. 'ocr_model_reloads_total{result="refused"}';
    0.0 while it has not appeared."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
