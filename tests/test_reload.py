"""Model changes without downtime: atomic swaps under concurrent load, refusals, the registry and its cache."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
from live_server import free_port, hammer, live_server, metric, wait_until
from service_client import AUTH, TOKEN
from service_model import point

from app.model_store import ModelStore
from app.settings import Settings


def test_swaps_under_concurrent_load_lose_no_request(tmp_path, models, mnist_splits):
    pixels = mnist_splits.test_x[0].tolist()
    env = {"OCR_MODEL_PATH": str(models["current"]), "OCR_ADMIN_TOKEN": TOKEN,
           "OCR_FEEDBACK_DB": str(tmp_path / "fb.db")}
    with live_server(env, tmp_path / "server.log") as base:
        stop, results = threading.Event(), []
        workers = [threading.Thread(target=hammer, args=(base, pixels, stop, results)) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            wait_until(lambda: sum(v == "1" for _, _, v in list(results)) >= 20, "20 answers from v1")
            point(models["current"], models["v2"])
            r = httpx.post(f"{base}/admin/reload", headers=AUTH, timeout=30)
            assert r.status_code == 200 and r.json()["status"] == "reloaded", r.text
            swapped_at = time.monotonic()
            for bad in ("corrupt", "nan"):
                mark = time.monotonic()
                wait_until(lambda t=mark: sum(s > t for s, _, _ in list(results)) >= 20, f"20 answers before {bad}")
                point(models["current"], models[bad])
                r = httpx.post(f"{base}/admin/reload", headers=AUTH, timeout=30)
                assert r.status_code == 409 and r.json()["status"] == "refused", r.text
                assert r.json()["model"]["version"] == "2"
            mark = time.monotonic()
            wait_until(lambda: sum(s > mark for s, _, _ in list(results)) >= 20, "20 answers after the refusals")
        finally:
            stop.set()
            for w in workers:
                w.join()
        metrics = httpx.get(f"{base}/metrics").text
    failed = [r for r in results if r[1] != 200]
    versions = [r[2] for r in results]
    print(f"\n{len(results)} requests across 1 swap and 2 refused reloads: {len(failed)} failed; "
          f"{versions.count('1')} on v1, {versions.count('2')} on v2")
    assert not failed
    assert versions.count("1") > 0 and versions.count("2") > 0
    assert all(v == "2" for sent, _, v in results if sent > swapped_at)
    assert 'ocr_model_reloads_total{result="refused"} 2.0' in metrics
    assert 'ocr_model_info{alias="",name="test-cnn",source=' in metrics and 'version="2"' in metrics


def test_interval_check_picks_up_a_new_version(tmp_path, models):
    env = {"OCR_MODEL_PATH": str(models["current"]), "OCR_FEEDBACK_DB": str(tmp_path / "fb.db")}
    with live_server({**env, "OCR_RELOAD_INTERVAL_S": "0.3"}, tmp_path / "server.log") as base:
        assert httpx.get(f"{base}/model").json()["version"] == "1"
        point(models["current"], models["v2"])
        wait_until(lambda: httpx.get(f"{base}/model").json()["version"] == "2", "the new version picked up", 10)
        point(models["current"], models["corrupt"])
        wait_until(lambda: metric(base, 'ocr_model_reloads_total{result="refused"}') >= 1, "the corrupt model refused",
                   10)
        assert httpx.get(f"{base}/health").json()["model"]["version"] == "2"


def test_registry_alias_cache_and_unreachable_store(tmp_path, tracking_uri, models, monkeypatch):
    from cnn_ocr import registry
    from cnn_ocr.tracking.runs import tracked_run
    from cnn_ocr.tracking.writing import log_artifacts

    def register(folder: Path) -> int:
        with tracked_run("service-test") as run:
            run_id = run.info.run_id
        log_artifacts(run_id, folder, registry.ONNX_ARTIFACT_DIR)
        info = registry.create_version(registry.REGISTERED_MODEL, run_id, {"family": "base_cnn"})
        registry.move_alias(registry.REGISTERED_MODEL, registry.PRODUCTION, info.version, action="promote",
                            why="service test")
        return info.version

    first = register(models["v1"])
    settings = Settings(model_path=None, model_cache_dir=tmp_path / "cache", reload_interval_s=0)
    store = ModelStore(settings)
    result = store.reload()
    assert result.status == "reloaded", result.detail
    assert store.current.info.version == str(first) and store.current.info.alias == "production"
    assert store.current.info.source.startswith("registry models:/OCR-Production-Model@production")
    assert store.reload().status == "unchanged"
    second = register(models["v2"])
    assert store.reload().status == "reloaded" and store.current.info.version == str(second)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    offline = ModelStore(settings)
    start = time.monotonic()
    assert offline.reload().status == "reloaded"
    assert time.monotonic() - start < 30
    assert offline.current.info.version == str(second) and "local cache" in offline.current.info.source
    pointer = json.loads((tmp_path / "cache" / "OCR-Production-Model" / "production.alias.json").read_text())
    assert pointer["version"] == str(second)

    empty = ModelStore(Settings(model_path=None, model_cache_dir=tmp_path / "empty", reload_interval_s=0))
    refused = empty.reload()
    assert refused.status == "refused" and empty.current is None
    assert "no model to serve" in refused.detail and "no cached copy under" in refused.detail
    assert "models:/OCR-Production-Model@production" in refused.detail
