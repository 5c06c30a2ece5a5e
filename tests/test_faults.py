"""Faults survived: model swaps under load, tracking store down (service and training), SIGTERM with requests
in flight, kill -9 with feedback written, training interrupted and resumed, corrupted data.

Everything runs for real: uvicorn and `ocr` processes on loopback, SQLite, the MLflow sqlite store, signals.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from live_server import ROOT, free_port, hammer, live_server, metric, wait_until
from service_client import AUTH, TOKEN
from service_model import copy_model, point

OCR = [sys.executable, "-c", "from cnn_ocr.cli import app; app()"]
TIMING_METRICS = {"training_time_s", "inference_ms_per_image"}


def start_serve(env: dict[str, str], log_path: Path, port: int) -> subprocess.Popen:
    """`ocr serve` on a loopback port with `env` added."""
    full = {**os.environ, "OCR_RELOAD_INTERVAL_S": "0", **env}
    with open(log_path, "wb") as log:
        return subprocess.Popen([*OCR, "serve", "--port", str(port)], cwd=ROOT, env=full, stdout=log,
                                stderr=subprocess.STDOUT)


def wait_healthy(base: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()[-2000:]
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not healthy: {log_path.read_text()[-2000:]}")


# ---------------------------------------------------------------- service

def test_repeated_hot_swaps_under_load_fail_no_request(tmp_path, models, mnist_splits):
    env = {"OCR_MODEL_PATH": str(models["current"]), "OCR_ADMIN_TOKEN": TOKEN, "OCR_FEEDBACK_DB": str(tmp_path / "f.db")}
    with live_server(env, tmp_path / "server.log") as base:
        stop, results = threading.Event(), []
        workers = [threading.Thread(target=hammer, args=(base, mnist_splits.test_x[i].tolist(), stop, results))
                   for i in range(6)]
        for w in workers:
            w.start()
        outcomes = []
        try:
            for target in ("v2", "corrupt", "v1", "nan", "v2", "v1"):
                mark = time.monotonic()  # each model serves some load before the next swap
                wait_until(lambda t=mark: sum(sent > t for sent, _, _ in list(results)) >= 20, f"load before {target}")
                point(models["current"], models[target])
                outcomes.append(httpx.post(f"{base}/admin/reload", headers=AUTH, timeout=30).json()["status"])
        finally:
            stop.set()
            for w in workers:
                w.join()
    failed = [r for r in results if r[1] != 200]
    print(f"\n{len(results)} requests from 6 clients across 4 swaps and 2 refused models: {len(failed)} failed")
    assert outcomes == ["reloaded", "refused", "reloaded", "refused", "reloaded", "reloaded"]
    assert not failed and len(results) > 50


def _registry_cache(cache: Path, model_dir: Path) -> None:
    """The local copy the service keeps of the production version (as written when the registry was reached)."""
    copy_model(model_dir, cache / "OCR-Production-Model" / "7", "7")
    (cache / "OCR-Production-Model" / "production.alias.json").write_text(json.dumps({"folder": "7", "version": "7"}))


def test_tracking_store_down_at_start_uses_cache_or_fails_fast(tmp_path, service_model_dir):
    down = f"http://127.0.0.1:{free_port()}"
    base_env = {"MLFLOW_TRACKING_URI": down, "OCR_FEEDBACK_DB": str(tmp_path / "f.db"), "OCR_REGISTRY_TIMEOUT_S": "2"}
    empty = {**os.environ, **base_env, "OCR_MODEL_CACHE_DIR": str(tmp_path / "empty")}
    start = time.monotonic()
    done = subprocess.run([*OCR, "serve", "--port", str(free_port())], cwd=ROOT, env=empty, capture_output=True,
                          text=True, timeout=120)
    took = time.monotonic() - start
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 3 and len(lines) == 1, done.stderr
    assert "no model to serve" in lines[0] and down in lines[0] and "no cached copy" in lines[0]
    assert took < 60, f"took {took:.0f} s to fail"

    _registry_cache(tmp_path / "cache", service_model_dir)
    port, log_path = free_port(), tmp_path / "serve.log"
    proc = start_serve({**base_env, "OCR_MODEL_CACHE_DIR": str(tmp_path / "cache")}, log_path, port)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log_path)
        info = httpx.get(f"http://127.0.0.1:{port}/model").json()
        assert info["version"] == "7" and info["source"].startswith("local cache")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    said = log_path.read_text()
    assert "tracking store unreachable" in said and "serving the cached copy" in said
    print(f"\nstore down: no cache -> exit 3 in {took:.1f} s with one line; cache -> served version 7")


def _slow_request(port: int, body: bytes, pause: threading.Event, out: list) -> None:
    """A /predict whose body arrives in two halves; the second only after `pause` is set."""
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body[: len(body) // 2])
        out.append("sent half")
        pause.wait(30)
        sock.sendall(body[len(body) // 2:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    out.append(reply.split(b"\r\n", 1)[0].decode())


def _server_sockets(pid: int, port: int) -> list:
    """The inet sockets of the process `pid` (and its children) on local port `port`."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return [c for p in procs for c in p.net_connections("inet") if c.laddr and c.laddr.port == port]


def _established(pid: int, port: int) -> int:
    return sum(c.status == psutil.CONN_ESTABLISHED for c in _server_sockets(pid, port))


def _listening(pid: int, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN for c in _server_sockets(pid, port))


def test_sigterm_finishes_requests_in_flight_and_exits_0(tmp_path, service_model_dir, mnist_splits):
    port, log_path = free_port(), tmp_path / "serve.log"
    proc = start_serve({"OCR_MODEL_PATH": str(service_model_dir), "OCR_FEEDBACK_DB": str(tmp_path / "f.db")},
                       log_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, log_path)
        body = json.dumps({"pixels": mnist_splits.test_x[0].tolist()}).encode()
        release, outs = threading.Event(), [[] for _ in range(4)]
        clients = [threading.Thread(target=_slow_request, args=(port, body, release, out)) for out in outs]
        for c in clients:
            c.start()
        wait_until(lambda: all(outs), "4 requests half sent")
        wait_until(lambda: _established(proc.pid, port) >= 4, "4 connections accepted by the server")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: not _listening(proc.pid, port), "the listening socket closed after SIGTERM")
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.post(f"{base}/predict", json={"pixels": mnist_splits.test_x[0].tolist()}, timeout=5)
        release.set()
        for c in clients:
            c.join(timeout=30)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    statuses = [out[-1] for out in outs]
    print(f"\nSIGTERM with 4 requests in flight: {statuses}; exit code {code}")
    assert statuses == ["HTTP/1.1 200 OK"] * 4, log_path.read_text()[-2000:]
    assert code == 0, log_path.read_text()[-2000:]


def test_clients_leaving_mid_upload_cost_no_traceback_and_the_service_stays_up(tmp_path, service_model_dir,
                                                                                mnist_splits):
    """A load generator stopping, a phone losing signal: the body ends early. Quietly dropped, never a 500."""
    from benchmarks.service import _multipart, _png

    log_path = tmp_path / "serve.log"
    body_file = tmp_path / "body"
    ctype = _multipart(_png(255 - mnist_splits.test_x[0]), body_file)
    body = body_file.read_bytes()
    env = {"OCR_MODEL_PATH": str(service_model_dir), "OCR_FEEDBACK_DB": str(tmp_path / "f.db")}
    with live_server(env, log_path) as base:
        port = int(base.rsplit(":", 1)[1])
        for path, payload, kind in (("/predict", body, ctype), ("/read", body, ctype),
                                    ("/predict", b'{"pixels": [[0, 0', "application/json")):
            for _ in range(3):
                series = f'ocr_requests_total{{endpoint="{path}",method="POST",status="499"}}'
                before = metric(base, series)
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
                                 f"Content-Length: {len(payload) + 1000}\r\n\r\n".encode() + payload[: len(payload) // 2])
                wait_until(lambda s=series, b=before: metric(base, s) > b, f"{path}: the client's leaving counted")
        ok = httpx.post(f"{base}/predict", files={"file": ("d.png", _png(255 - mnist_splits.test_x[0]), "image/png")})
        metrics = httpx.get(f"{base}/metrics").text
    text = log_path.read_text()
    left = {path: float(re.search(rf'ocr_requests_total{{endpoint="{path}",method="POST",status="499"}} (\S+)',
                                  metrics).group(1)) for path in ("/predict", "/read")}
    print(f"\n9 clients left mid-upload: counted as 499 {left}, {text.count('Traceback')} tracebacks in the log; "
          f"next request {ok.status_code}")
    assert ok.status_code == 200 and ok.json()["digit"] == int(mnist_splits.test_y[0])
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]
    assert left == {"/predict": 6, "/read": 3} and 'status="500"' not in metrics


def test_feedback_survives_kill_9(tmp_path, service_model_dir, mnist_splits):
    from cnn_ocr.feedback import FeedbackStore

    env = {"OCR_MODEL_PATH": str(service_model_dir), "OCR_FEEDBACK_DB": str(tmp_path / "f.db")}
    port, log_path = free_port(), tmp_path / "serve.log"
    proc = start_serve(env, log_path, port)
    base, labels = f"http://127.0.0.1:{port}", []
    try:
        wait_healthy(base, proc, log_path)
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(25):  # under the per-client feedback limit of 30 a minute
                pid = client.post("/predict", json={"pixels": mnist_splits.test_x[i].tolist()}).json()["prediction_id"]
                label = int(mnist_splits.test_y[i])
                assert client.post("/feedback", json={"prediction_id": pid, "label": label}).status_code == 200
                labels.append(label)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with live_server(env, tmp_path / "again.log") as again:  # restart on the same database
        assert httpx.get(f"{again}/health").status_code == 200
    store = FeedbackStore(tmp_path / "f.db")
    images, stored, _ = store.feedback_arrays()
    store.close()
    print(f"\nkill -9 after {len(labels)} feedback posts: {len(stored)} found after restart")
    assert stored.tolist() == labels and np.array_equal(images[0], mnist_splits.test_x[0])


# ---------------------------------------------------------------- training

def ocr_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A fresh tracking store, checkpoint folder and offline store under tmp_path."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "OCR_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "OCR_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
           "OCR_MLFLOW_OFFLINE_DIR": str(tmp_path / "offline"), "COLUMNS": "200", **extra}
    return env


def train_args(tiny_overrides: list[str], out: Path, epochs: int = 4) -> list[str]:
    sets = [*tiny_overrides, f"models.base_cnn.epochs={epochs}"]
    return [*OCR, "train", "--model", "base_cnn", *[a for s in sets for a in ("--set", s)], "--metrics-out", str(out)]


def comparable(path: Path) -> dict[str, float]:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING_METRICS}


def interrupt_after_two_epochs(tmp_path: Path, tiny_overrides: list[str], sig: int) -> tuple[str, int, str]:
    """Start `ocr train`, wait until epoch 2's checkpoint replaced epoch 1's, send `sig`; (run id, rc, stderr)."""
    proc = subprocess.Popen(train_args(tiny_overrides, tmp_path / f"never-{sig}.json"), cwd=ROOT,
                            env=ocr_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: list[int] = []
    deadline = time.monotonic() + 180
    while len(set(seen)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it was interrupted"
        found = list((tmp_path / "ckpt").glob("*/last.pt"))
        if found and (not seen or found[0].stat().st_ino != seen[-1]):
            seen.append(found[0].stat().st_ino)
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return found[0].parent.name, proc.returncode, err


@pytest.fixture()
def reference_metrics(tmp_path_factory, tiny_overrides) -> dict[str, float]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run(train_args(tiny_overrides, folder / "m.json"), cwd=ROOT, env=ocr_env(folder),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return comparable(folder / "m.json")


def test_interrupted_training_is_killed_checkpointed_and_resumes_to_the_same_metrics(tmp_path, tiny_overrides,
                                                                                      reference_metrics):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        run_id, code, err = interrupt_after_two_epochs(tmp_path, tiny_overrides, sig)
        lines = [line for line in err.splitlines() if line.strip() and "INFO" not in line]
        assert code == 130 and f"ocr train --resume {run_id}" in err, err[-2000:]
        assert len([line for line in lines if "error" in line]) == 1 and "Traceback" not in err, err[-2000:]
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and run.data.tags["interrupted"] == "true"
        assert int(run.data.tags["checkpoint_epoch"]) in (2, 3)
        assert [a.path for a in client.list_artifacts(run_id, "checkpoint")] == ["checkpoint/last.pt"]
        shutil.rmtree(tmp_path / "ckpt")  # resume from the logged checkpoint, not the local copy
    done = subprocess.run([*OCR, "train", "--resume", run_id, "--metrics-out", str(tmp_path / "resumed.json")],
                          cwd=ROOT, env=ocr_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = comparable(tmp_path / "resumed.json")
    [new] = client.search_runs([run.info.experiment_id], f"tags.resumed_from = '{run_id}'")
    assert new.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(new.info.run_id, "val_accuracy")] == [1, 2, 3, 4, 5]  # 5: final
    print(f"\nSIGTERM and SIGINT mid-epoch -> KILLED runs with checkpoints; resumed after epoch "
          f"{new.data.tags['resumed_after_epoch']}: test_accuracy {resumed['test_accuracy']:.4f} "
          f"(uninterrupted {reference_metrics['test_accuracy']:.4f})")
    assert resumed == reference_metrics


def test_tracking_server_down_when_training_starts_keeps_everything_locally_and_syncs(tmp_path, tiny_overrides):
    from mlflow import MlflowClient

    down = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(train_args(tiny_overrides, tmp_path / "m.json", epochs=1), cwd=ROOT,
                          env=ocr_env(tmp_path, MLFLOW_TRACKING_URI=down), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"MLFLOW_TRACKING_URI={down} ocr sync" in done.stdout, done.stdout[-2000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    offline = MlflowClient(f"sqlite:///{tmp_path / 'offline' / 'mlflow.db'}")
    [run] = offline.search_runs([e.experiment_id for e in offline.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.tags["offline_for"] == down
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])

    still_down = subprocess.run([*OCR, "sync"], cwd=ROOT, env=ocr_env(tmp_path, MLFLOW_TRACKING_URI=down),
                                capture_output=True, text=True, timeout=120)
    assert still_down.returncode == 1 and "still unreachable" in still_down.stderr
    server = f"sqlite:///{tmp_path / 'server.db'}"  # the server is back (a real store behind the same API)
    synced = subprocess.run([*OCR, "sync"], cwd=ROOT, env=ocr_env(tmp_path, MLFLOW_TRACKING_URI=server,
                                                                    OCR_MLFLOW_ARTIFACT_ROOT=str(tmp_path / "srv-art")),
                            capture_output=True, text=True, timeout=300)
    assert synced.returncode == 0 and "1 run(s) synced" in synced.stdout, synced.stderr[-2000:]
    target = MlflowClient(server)
    [copy] = target.search_runs([e.experiment_id for e in target.search_experiments()])
    assert copy.info.status == "FINISHED" and copy.data.metrics == run.data.metrics
    assert copy.data.params == run.data.params
    paths = {a.path for a in target.list_artifacts(copy.info.run_id)}
    assert {"params.json", "model", "plots"} <= paths
    history = [(m.step, m.value) for m in target.get_metric_history(copy.info.run_id, "val_accuracy")]
    assert history == [(m.step, m.value) for m in offline.get_metric_history(run.info.run_id, "val_accuracy")]
    assert len(history) == 2  # epoch 1 and the final figure
    again = subprocess.run([*OCR, "sync"], cwd=ROOT, env=ocr_env(tmp_path, MLFLOW_TRACKING_URI=server),
                           capture_output=True, text=True, timeout=120)
    assert "0 run(s) synced" in again.stdout


def start_mlflow_server(tmp_path: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` (sqlite backend, proxied artifacts) on loopback; returns once it answers."""
    log = open(tmp_path / f"mlflow-server-{port}.log", "ab")  # noqa: SIM115 (kept open for the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (tmp_path / f"mlflow-server-{port}.log").read_text()[-2000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        assert time.monotonic() < deadline, "mlflow server did not answer within 120 s"
        time.sleep(0.2)


def crash(proc: subprocess.Popen) -> None:
    """kill -9 the whole process group (the server and its workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_tracking_server_lost_mid_training_run_fails_over_to_local_store_and_syncs(tmp_path, tiny_overrides):
    from mlflow import MlflowClient

    port = free_port()
    server_uri = f"http://127.0.0.1:{port}"
    env = ocr_env(tmp_path, MLFLOW_TRACKING_URI=server_uri)
    env.pop("OCR_MLFLOW_ARTIFACT_ROOT")  # artifacts go through the server, as with a real remote one
    server = start_mlflow_server(tmp_path, port)
    epochs = 30
    try:
        proc = subprocess.Popen(train_args(tiny_overrides, tmp_path / "m.json", epochs=epochs), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while not (found := list((tmp_path / "ckpt").glob("*/last.pt"))):  # epoch 1 is done
            assert proc.poll() is None and time.monotonic() < deadline, "training ended before the server died"
            time.sleep(0.01)
        while not MlflowClient(server_uri).get_metric_history(found[0].parent.name, "val_accuracy"):  # and logged
            assert proc.poll() is None and time.monotonic() < deadline, "training ended before the server died"
            time.sleep(0.01)
        crash(server)
        t_crash = time.monotonic()
        out, err = proc.communicate(timeout=300)
        after_crash_s = time.monotonic() - t_crash
    finally:
        crash(server)
    assert proc.returncode == 0, err[-3000:]
    server_run_id = next((tmp_path / "ckpt").glob("*/last.pt")).parent.name
    assert f"MLFLOW_TRACKING_URI={server_uri} ocr sync" in out, out[-2000:]
    assert "Traceback" not in err, err[-3000:]
    offline = MlflowClient(f"sqlite:///{tmp_path / 'offline' / 'mlflow.db'}")
    [run] = offline.search_runs([e.experiment_id for e in offline.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.tags["server_run_id"] == server_run_id
    assert run.data.tags["offline_for"] == server_uri and run.data.params["epochs"] == str(epochs)
    steps = [m.step for m in offline.get_metric_history(run.info.run_id, "val_accuracy")]
    assert steps == list(range(1, epochs + 2))  # every epoch (those logged before the crash replayed) + final
    assert {"params.json", "plots"} <= {a.path for a in offline.list_artifacts(run.info.run_id)}
    assert run.outputs.model_outputs  # the logged model (MLflow 3 keeps it beside the run's artifacts)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])

    server = start_mlflow_server(tmp_path, port)  # the server is back, same store
    try:
        synced = subprocess.run([*OCR, "sync"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert synced.returncode == 0 and "1 run(s) synced" in synced.stdout, synced.stderr[-2000:]
        target = MlflowClient(server_uri)
        partial = target.get_run(server_run_id)
        copy_id = partial.data.tags["continued_as"]
        copy = target.get_run(copy_id)
        copied = [(m.step, m.value) for m in target.get_metric_history(copy_id, "val_accuracy")]
        artifacts = {a.path for a in target.list_artifacts(copy_id)}
    finally:
        crash(server)
    assert partial.info.status == "FAILED" and 1 <= len(partial.data.metrics) and copy.info.status == "FINISHED"
    assert copied == [(m.step, m.value) for m in offline.get_metric_history(run.info.run_id, "val_accuracy")]
    assert {"params.json", "model", "plots"} <= artifacts
    print(f"\ntracking server killed after epoch 1 of {epochs}: training went on {after_crash_s:.1f} s, finished, "
          f"kept {len(steps)} val_accuracy points offline, synced as {copy_id}; partial server run marked FAILED")


def test_corrupted_data_is_detected_by_hash_with_the_repair_command(tmp_path, tiny_data_dir, tiny_overrides):
    from cnn_ocr.config import load_params
    from cnn_ocr.data import load_version
    from cnn_ocr.data.raw_store import CacheError

    shutil.copytree(tiny_data_dir / "v2.0", tmp_path / "v2.0")
    target = tmp_path / "v2.0" / "train_x.npy"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte in the pixels
    target.write_bytes(bytes(raw))
    data = load_params(ROOT / "params.yaml", [f"data.processed_dir={tmp_path}"]).data
    with pytest.raises(CacheError, match=r"does not match its recorded sha256.*dvc checkout"):
        load_version("v2.0", data)
    sets = [s for s in tiny_overrides if not s.startswith("data.processed_dir")] + [f"data.processed_dir={tmp_path}"]
    done = subprocess.run([*OCR, "train", "--model", "base_cnn", *[a for s in sets for a in ("--set", s)]], cwd=ROOT,
                          env=ocr_env(tmp_path), capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert done.returncode == 1 and len(errors) == 1 and "dvc checkout" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
