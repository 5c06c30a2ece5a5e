"""Command-line success paths around the data and the service: `ocr data info`, and `ocr serve --workers 2`
with a prediction served by one worker corrected through the other."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
from live_server import ROOT, free_port, wait_until

OCR = [sys.executable, "-c", "from cnn_ocr.cli import app; app()"]


def test_data_info_shows_each_version_with_its_counts(tiny_data_dir):
    done = subprocess.run([*OCR, "data", "info", "--set", f"data.processed_dir={tiny_data_dir}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    said = done.stdout
    for version in ("v2.0", "v3.0"):
        recorded = json.loads((tiny_data_dir / version / "meta.json").read_text())["content_hash"]
        assert f"mnist {version}" in said and str(tiny_data_dir / version) in said, said
        assert f"content sha256 {recorded[:16]}" in said, said
    for split, count in (("train", 600), ("val", 200), ("test", 500)):
        per_class = " ".join([str(count // 10)] * 10)
        assert f"{split:<5} {count:>7}  per class 0-9: {per_class}" in said, said
    assert "missing" not in said


def _connection_to_worker(port: int, workers: set[int]) -> tuple[http.client.HTTPConnection, int]:
    """A kept-alive connection and the pid of the worker process that accepted it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    local = conn.sock.getsockname()[1]

    def owner() -> int | None:
        for pid in workers:
            if any(c.raddr and c.raddr.port == local for c in psutil.Process(pid).net_connections("inet")):
                return pid
        return None

    return conn, wait_until(owner, f"the worker holding connection :{local}", 10)


def _post(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[int, dict]:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


@pytest.mark.api
def test_serve_two_workers_share_the_feedback_store(tmp_path, service_model_dir, mnist_splits):
    from cnn_ocr.feedback import FeedbackStore

    port, db = free_port(), tmp_path / "feedback.db"
    env = {**os.environ, "OCR_FEEDBACK_DB": str(db), "OCR_RELOAD_INTERVAL_S": "0"}
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([*OCR, "serve", "--workers", "2", "--port", str(port), "--model-path",
                                 str(service_model_dir)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def two_listening_workers() -> set[int] | None:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            kids = {k.pid for k in psutil.Process(proc.pid).children(recursive=True)
                    if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in k.net_connections("inet"))}
            return kids if len(kids) == 2 else None

        workers = wait_until(two_listening_workers, "two worker processes", 120, 0.2)
        wait_until(lambda: _health(port), "the service healthy", 120, 0.2)
        conns: dict[int, http.client.HTTPConnection] = {}
        for _ in range(40):  # the kernel spreads new connections over the workers
            conn, pid = _connection_to_worker(port, workers)
            conns.setdefault(pid, conn)
            if len(conns) == 2:
                break
        assert len(conns) == 2, f"every connection went to one worker of {workers}"
        (a, first), (b, second) = conns.items()
        labels = []
        for i, (served, corrected) in enumerate(((first, second), (second, first))):
            status, answer = _post(served, "/predict", {"pixels": mnist_splits.test_x[i].tolist()})
            assert status == 200 and answer["digit"] == int(mnist_splits.test_y[i]), answer
            label = (answer["digit"] + 1) % 10
            status, stored = _post(corrected, "/feedback", {"prediction_id": answer["prediction_id"], "label": label})
            assert status == 200 and stored["stored"], stored
            labels.append(label)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]
    store = FeedbackStore(db)
    _, stored_labels, _ = store.feedback_arrays()
    store.close()
    assert stored_labels.tolist() == labels and a != b


def _health(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
