"""Model inference benchmark: batch-1 latency (p50/p99) and batch-256 throughput, the framework (PyTorch eager,
scikit-learn) beside ONNX Runtime (tuned 2-thread and 1-thread sessions), int8 ONNX, and the 3-CNN ensemble.

CNN speed does not depend on the weights, but accuracies do: trained weights come from the training
benchmark's cache (`benchmarks/.cache/`) when present, else the CNNs are freshly initialised (said so).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import CACHE_DIR, core_count, percentile, summarize, target, time_calls, write_result

log = logging.getLogger(__name__)

FULL = {"repeats": 5, "calls": 1000, "batches": 20, "batch": 256, "svm_train": 55000, "test": None, "calib": 512}
SMOKE = {"repeats": 2, "calls": 30, "batches": 2, "batch": 256, "svm_train": 500, "test": 500, "calib": 64}
PRODUCTION_FAMILY = "improved_cnn"


def _measure(predict_one: Any, predict_batch: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """p50/p99 of batch-1 calls and images/s at the batch size, each summarized over repeats."""
    p50, p99, tput = [], [], []
    for _ in range(cfg["repeats"]):
        ms = time_calls(predict_one, cfg["calls"])
        p50.append(percentile(ms, 50))
        p99.append(percentile(ms, 99))
        batch_ms = time_calls(predict_batch, cfg["batches"], warmup=2)
        tput.append(cfg["batch"] / (np.median(batch_ms) / 1000.0))
    return {"batch1_p50_ms": summarize(p50), "batch1_p99_ms": summarize(p99),
            f"batch{cfg['batch']}_images_per_s": summarize(tput)}


def _torch_model(family: str, params: Any) -> tuple[Any, str]:
    import torch

    from cnn_ocr.models import build

    model = build(family, getattr(params.models, family))
    cached = sorted(CACHE_DIR.glob(f"{family}-seed*.pt"))
    if cached:
        model.load_state_dict(torch.load(cached[0], map_location="cpu"))
    return model.eval(), f"trained ({cached[0].name})" if cached else "untrained (no cached weights)"


def _ort_runs(onnx_path: Path, x1: np.ndarray, xb: np.ndarray, cfg: dict[str, Any]) -> dict[str, Any]:
    from cnn_ocr.onnx_session import make_session

    out = {}
    for label, threads in (("onnxruntime", 0), ("onnxruntime_1_thread", 1)):
        sess = make_session(onnx_path, threads)
        out[label] = _measure(lambda s=sess: s.run(None, {"input": x1}), lambda s=sess: s.run(None, {"input": xb}), cfg)
    return out


def _accuracy(onnx_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from cnn_ocr.onnx_session import make_session

    sess = make_session(onnx_path)
    logits = np.concatenate([sess.run(None, {"input": x[i : i + 1024]})[0] for i in range(0, len(x), 1024)])
    return float(np.mean(logits.argmax(1) == y))


def _cnn(family: str, params: Any, data: dict[str, np.ndarray], cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import torch

    from cnn_ocr.export import export_onnx

    model, weights = _torch_model(family, params)
    x1, xb = data["x"][:1], data["x"][: cfg["batch"]]
    t1, tb = torch.from_numpy(x1), torch.from_numpy(xb)
    with torch.inference_mode():
        res: dict[str, Any] = {"weights": weights, "pytorch": _measure(lambda: model(t1), lambda: model(tb), cfg)}
    path = export_onnx(model, family, tmp / f"{family}.onnx")
    res.update(_ort_runs(path, x1, xb, cfg))
    res["onnx_fp32_test_accuracy"] = _accuracy(path, data["x"], data["y"])
    if family == PRODUCTION_FAMILY:
        from cnn_ocr.quantize import quantize_int8

        q = quantize_int8(path, tmp / f"{family}-int8.onnx", data["calib"])
        res["onnxruntime_int8"] = _ort_runs(q, x1, xb, cfg)["onnxruntime"]
        res["onnx_int8_test_accuracy"] = _accuracy(q, data["x"], data["y"])
    res["speedup_onnxruntime_vs_pytorch_batch1"] = _ratio(res["pytorch"], res["onnxruntime"], "batch1_p50_ms")
    return res


def _ratio(slow: dict, fast: dict, key: str) -> float:
    return slow[key]["median"] / fast[key]["median"]


def _ensemble(params: Any, data: dict[str, np.ndarray], cfg: dict[str, Any], tmp: Path) -> dict[str, Any] | None:
    import torch

    from cnn_ocr.export import export_onnx
    from cnn_ocr.models import build
    from cnn_ocr.models.ensemble import Ensemble

    cached = sorted(CACHE_DIR.glob(f"{PRODUCTION_FAMILY}-seed*.pt"))
    if len(cached) < 2:
        return None
    members = []
    for path in cached:
        net = build(PRODUCTION_FAMILY, params.models.improved_cnn)
        net.load_state_dict(torch.load(path, map_location="cpu"))
        members.append(net.eval())
    onnx_path = export_onnx(Ensemble(members).eval(), PRODUCTION_FAMILY, tmp / "ensemble.onnx")
    res = _ort_runs(onnx_path, data["x"][:1], data["x"][: cfg["batch"]], cfg)
    return {"members": [p.name for p in cached], **res, "onnx_test_accuracy": _accuracy(onnx_path, data["x"], data["y"])}


def _svm(params: Any, splits: Any, data: dict[str, np.ndarray], cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    from cnn_ocr.export import export_onnx
    from cnn_ocr.models import build

    n = cfg["svm_train"]
    model = build("svm", params.models.svm).fit(_flat(splits.train_x[:n]), splits.train_y[:n])
    model.calibrate(_flat(splits.val_x[:2000]), splits.val_y[:2000])
    flat = data["x"].reshape(len(data["x"]), -1)
    f1, fb = flat[:1], flat[: cfg["batch"]]
    res: dict[str, Any] = {"train_images": n, "scikit_learn": _measure(lambda: model.predict_proba(f1),
                                                                        lambda: model.predict_proba(fb), cfg)}
    path = export_onnx(model, "svm", tmp / "svm.onnx")
    res.update(_ort_runs(path, f1.reshape(1, 1, 28, 28), fb.reshape(-1, 1, 28, 28), cfg))
    res["speedup_onnxruntime_vs_scikit_learn_batch1"] = _ratio(res["scikit_learn"], res["onnxruntime"], "batch1_p50_ms")
    return res


def _flat(x: np.ndarray) -> np.ndarray:
    from cnn_ocr.preprocess import to_model_input

    return to_model_input(x).reshape(len(x), -1)


def _targets(fig: dict[str, Any]) -> list[dict[str, Any]]:
    prod = fig["models"].get(PRODUCTION_FAMILY)
    if prod is None:
        return []
    ort_ = prod["onnxruntime"]
    trained = prod["weights"].startswith("trained")
    drop = 100 * (prod["onnx_fp32_test_accuracy"] - prod["onnx_int8_test_accuracy"])
    out = [target("production model (improved_cnn) ONNX batch-1 p50", ort_["batch1_p50_ms"]["median"], 0.2, "ms", False),
           target("production model ONNX batch-256 throughput", ort_["batch256_images_per_s"]["median"], 8000, "img/s", True),
           target("int8 accuracy drop", drop if trained else None, 0.05, "points", False,
                  "" if trained else "no trained weights cached"),
           target("int8 batch-256 throughput", prod["onnxruntime_int8"]["batch256_images_per_s"]["median"], 15000,
                  "img/s", True)]
    ens = fig.get("ensemble")
    if ens:
        out.append(target("ensemble ONNX batch-1 p50 (selection latency budget 5 ms)",
                          ens["onnxruntime"]["batch1_p50_ms"]["median"], 5.0, "ms", False))
    return out


def run(smoke: bool = False, out_dir: Path | None = None) -> Path:
    """Run the inference benchmark and write `inference.json`; returns its path."""
    import torch

    from cnn_ocr.config import load_params
    from cnn_ocr.data import ensure_prepared, load_version
    from cnn_ocr.preprocess import to_model_input

    cfg = SMOKE if smoke else FULL
    torch.set_num_threads(core_count())
    params = load_params()
    ensure_prepared(params.data)
    splits = load_version("v2.0", params.data)
    n = cfg["test"] or len(splits.test_y)
    data = {"x": to_model_input(splits.test_x[:n]), "y": splits.test_y[:n],
            "calib": to_model_input(splits.val_x[: cfg["calib"]])}
    fig: dict[str, Any] = {"models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("base_cnn", "improved_cnn"):
            log.info("inference benchmark: %s", family)
            fig["models"][family] = _cnn(family, params, data, cfg, Path(tmp))
        fig["models"]["svm"] = _svm(params, splits, data, cfg, Path(tmp))
        fig["ensemble"] = _ensemble(params, data, cfg, Path(tmp))
    prod = fig["models"][PRODUCTION_FAMILY]
    fig["int8_speedup_vs_fp32_batch256"] = (prod["onnxruntime_int8"]["batch256_images_per_s"]["median"]
                                            / prod["onnxruntime"]["batch256_images_per_s"]["median"])
    settings = {"smoke": smoke, **cfg, "threads": core_count()}
    from benchmarks.common import RESULTS_DIR

    return write_result("inference", "smoke" if smoke else "full", fig, _targets(fig), "cpu", settings,
                        out_dir or RESULTS_DIR)
