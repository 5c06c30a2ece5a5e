"""Access and input safety: admin token, CORS, loopback binding, limits before decoding, feedback rate limit,
no unpickling of user input, validated feedback, nothing user-supplied in a path or an SQL string.

The data fetch's side (a pickle opened only after its sha256 matches, through a restricted unpickler) is
proved in tests/test_sources.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from image_files import png, png_header_only
from live_server import ROOT, free_port
from service_client import TOKEN, assert_error, make_client

pytestmark = pytest.mark.api


# ---------------------------------------------------------------- admin

def test_admin_token_compared_in_constant_time_and_required(client, monkeypatch):
    """Every token check goes through the constant-time comparison; only the exact bearer token passes."""
    import hmac
    import secrets

    compared: list[tuple] = []
    real = hmac.compare_digest

    def watched(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", watched)
    monkeypatch.setattr(secrets, "compare_digest", watched)
    for header in ("Bearer", "Bearer ", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Bearer {TOKEN.upper()}",
                   "Bearer \u00e9\u00e9"):
        before = len(compared)
        assert_error(client.post("/admin/reload", headers={"Authorization": header.encode()}), 401)
        assert len(compared) > before, f"{header!r} was not compared in constant time"
    for header in (None, "", f"Basic {TOKEN}", TOKEN):
        headers = {} if header is None else {"Authorization": header.encode()}
        assert_error(client.post("/admin/reload", headers=headers), 401)
    before = len(compared)
    assert client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert len(compared) > before and any(TOKEN.encode() in (a, b) or TOKEN in (a, b) for a, b in compared)


@pytest.mark.parametrize("token", [None, ""])
def test_admin_is_off_without_a_token(tmp_path, service_model_dir, token):
    with make_client(tmp_path, service_model_dir, admin_token=token) as c:
        for header in ("Bearer ", "Bearer None", "Bearer null", ""):
            assert "disabled" in assert_error(c.post("/admin/reload", headers={"Authorization": header}), 404)


# ---------------------------------------------------------------- CORS

def test_cors_closed_by_default(client):
    from app.settings import Settings

    assert Settings.model_fields["cors_origins"].default_factory() == []
    for method, path in (("get", "/model"), ("post", "/predict")):
        r = getattr(client, method)(path, headers={"Origin": "https://evil.example"},
                                    **({"json": {"pixels": [[0] * 28] * 28}} if method == "post" else {}))
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = client.options("/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------- binding

def _listening_addresses(pid: int, timeout_s: float = 60.0) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        found = {c.laddr.ip for p in procs for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("the server never listened")


def _other_local_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_make_serve_binds_loopback():
    """What `make serve` and `make run` would start (a dry run): the service on 127.0.0.1."""
    for target in ("serve", "run"):
        done = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        [serve] = [line for line in done.stdout.splitlines() if "ocr serve" in line and "echo" not in line]
        assert "--host 127.0.0.1" in serve, serve


def test_ocr_serve_binds_loopback_by_default(tmp_path, service_model_dir):
    port = free_port()
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "OCR_MODEL_PATH": str(service_model_dir),
           "OCR_FEEDBACK_DB": str(tmp_path / "fb.db"), "OCR_RELOAD_INTERVAL_S": "0"}
    proc = subprocess.Popen([sys.executable, "-c", "from cnn_ocr.cli import app; app()", "serve", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _listening_addresses(proc.pid) == {"127.0.0.1"}
        other = _other_local_address()
        if other:
            with pytest.raises(OSError), socket.create_connection((other, port), timeout=2):
                pass
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ocr_ui_binds_loopback(tmp_path):
    port = free_port()
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, "-c", "from cnn_ocr.cli import app; app()", "ui", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, cmdline = time.monotonic() + 60, []
        while time.monotonic() < deadline and "--host" not in cmdline:  # a child seen before its exec is a copy
            kids = psutil.Process(proc.pid).children()
            cmdline = kids[0].cmdline() if kids else []
            time.sleep(0.1)
        assert "--host" in cmdline and cmdline[cmdline.index("--host") + 1] == "127.0.0.1", cmdline
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- limits before decoding

def test_pixel_limit_is_checked_before_any_pixel_is_decoded(monkeypatch):
    from PIL import ImageFile

    from cnn_ocr.decode import ImageError, decode_image

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for width, height in ((50_000, 50_000), (25_001, 1000), (1, 25_000_001)):
        with pytest.raises(ImageError) as err:
            decode_image(png_header_only(width, height))
        assert err.value.kind == "too_large" and "pixels" in str(err.value)


def test_body_limit_refuses_from_the_header_before_reading(tmp_path, service_model_dir):
    from live_server import live_server

    env = {"OCR_MODEL_PATH": str(service_model_dir), "OCR_FEEDBACK_DB": str(tmp_path / "fb.db")}
    with live_server(env, tmp_path / "server.log") as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000000000\r\n\r\n")  # promise 1 GB, send nothing
            reply = b""
            while b'"detail"' not in reply and (chunk := sock.recv(4096)):
                reply += chunk
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 413") and '"detail"' in reply


def test_upload_over_the_byte_limit_is_refused(tmp_path, service_model_dir):
    with make_client(tmp_path, service_model_dir, max_bytes=4096) as c:
        noise = png(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))
        assert len(noise) > 4096
        assert "limit" in assert_error(c.post("/predict", files={"file": ("n.png", noise, "image/png")}), 413)


# ---------------------------------------------------------------- feedback

def test_feedback_rate_limit_is_per_client():
    from app.ratelimit import RateLimiter

    limiter = RateLimiter(3)
    assert [limiter.retry_after("10.0.0.1", now=0.0) for _ in range(4)][:3] == [0, 0, 0]
    assert limiter.retry_after("10.0.0.1", now=1.0) > 0
    assert limiter.retry_after("10.0.0.2", now=1.0) == 0  # another client is not affected
    assert limiter.retry_after("10.0.0.1", now=61.0) == 0  # the window passes


def test_feedback_labels_are_digits_only(client, mnist_splits):
    pid = client.post("/predict", json={"pixels": mnist_splits.test_x[0].tolist()}).json()["prediction_id"]
    for bad in (-1, 10, 99, 1e3, 7.0, "7", True, None, [7], {"d": 7}):
        assert_error(client.post("/feedback", json={"prediction_id": pid, "label": bad}), 422)
    assert_error(client.post("/feedback", json={"prediction_id": pid, "label": 7, "extra": 1}), 422)
    assert_error(client.post("/feedback", json={"prediction_id": "x" * 101, "label": 7}), 422)
    for label in range(10):
        assert client.post("/feedback", json={"prediction_id": pid, "label": label}).status_code == 200


def test_user_strings_never_reach_a_path_or_sql(client, tmp_path, mnist_splits):
    before = set(tmp_path.rglob("*"))
    nasty = ["../../etc/passwd", "x'); DROP TABLE feedback;--", "' OR '1'='1", "/tmp/evil", "..\\..\\win.ini",
             "%00", "\x00"]
    for name in nasty:
        r = client.post("/predict", files={"file": (name, png(255 - mnist_splits.test_x[0]), "image/png")})
        assert r.status_code == 200
        assert_error(client.post("/feedback", json={"prediction_id": name, "label": 1}), 404)
    after = set(tmp_path.rglob("*"))
    assert {p.name for p in after - before} <= {"feedback.db-wal", "feedback.db-shm"}
    pid = client.post("/predict", json={"pixels": mnist_splits.test_x[1].tolist()}).json()["prediction_id"]
    assert client.post("/feedback", json={"prediction_id": pid, "label": 2}).status_code == 200


def test_hostile_strings_are_stored_verbatim_never_run_as_sql(tmp_path, mnist_splits):
    """Ids made of SQL travel as values: stored, found and corrected as given, and the tables stay whole."""
    from cnn_ocr.feedback import FeedbackStore, PredictionRecord, UnknownPrediction

    hostile = ["x'); DROP TABLE feedback;--", "' OR '1'='1", 'a"; DELETE FROM predictions; --', "%", "_", "\\'"]
    store = FeedbackStore(tmp_path / "fb.db")
    try:
        store.record_predictions([PredictionRecord(pid, "digit", mnist_splits.test_x[i], 7, 0.9, "ok", "m", "1")
                                  for i, pid in enumerate(hostile)])
        for i, pid in enumerate(hostile):
            assert store.add_feedback(pid, i).label == i
        with pytest.raises(UnknownPrediction):  # a wildcard or an always-true clause matches nothing else
            store.add_feedback("' OR 'x'='x", 1)
        images, labels, _ = store.feedback_arrays()
        assert store.count_feedback() == len(hostile) and labels.tolist() == list(range(len(hostile)))
        assert np.array_equal(images, mnist_splits.test_x[:len(hostile)])
    finally:
        store.close()


def test_service_never_unpickles(tmp_path, service_model_dir, mnist_splits):
    """An audit hook sees every unpickled class: starting the service and serving requests triggers none."""
    events: list[str] = []
    watching = {"on": False}

    def hook(event: str, args: tuple) -> None:
        if watching["on"] and event in ("pickle.find_class", "marshal.loads"):
            events.append(f"{event} {args[:2]}")

    sys.addaudithook(hook)
    watching["on"] = True
    try:
        with make_client(tmp_path, service_model_dir) as c:
            assert c.post("/predict", json={"pixels": mnist_splits.test_x[0].tolist()}).status_code == 200
            assert c.post("/read", files={"file": ("r.png", png(255 - mnist_splits.test_x[1]), "image/png")}
                          ).status_code == 200
    finally:
        watching["on"] = False
    assert not [e for e in events if e.startswith("pickle")], events
    served = {p.name for p in Path(service_model_dir).iterdir()}
    assert served <= {"model.onnx", "spec.json"}
