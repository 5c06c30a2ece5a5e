"""A real, small CNN for the service tests: trained briefly on real MNIST, exported to ONNX + spec.json.

Training (30k images, 2 epochs) takes about 20-40 s on 2 cores; the exported folder is cached under `.cache/test-models/<hash>/`,
keyed by the source of this recipe and of the code that shapes the model (`SHAPING_CODE`), so later test
sessions reuse it until one of those files changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "test-models"
N_TRAIN = 30_000
EPOCHS = 2
SEED = 0


def _net():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 3 * 3, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10),
    )


def _train(train_x: np.ndarray, train_y: np.ndarray, make_net=_net, epochs: int = EPOCHS,
           negatives: np.ndarray | None = None):
    """Adam + one-cycle; with `negatives`, outlier exposure: as many random negatives per batch, their softmax
    pushed towards uniform (weight OE_WEIGHT), as `ocr train` does."""
    import torch
    import torch.nn.functional as F

    from cnn_ocr.fit.torch_loop import uniform_cross_entropy
    from cnn_ocr.preprocess import to_model_input

    torch.manual_seed(SEED)
    x, y = torch.from_numpy(to_model_input(train_x)), torch.from_numpy(train_y.astype(np.int64))
    negs = None if negatives is None else torch.from_numpy(to_model_input(negatives))
    net, batch = make_net(), 64
    steps = epochs * (len(x) // batch)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(len(x) // batch):
            idx = order[i * batch:(i + 1) * batch]
            if negs is None:
                loss = F.cross_entropy(net(x[idx]), y[idx])
            else:
                logits = net(torch.cat([x[idx], negs[torch.randint(len(negs), (len(idx),))]]))
                loss = F.cross_entropy(logits[:len(idx)], y[idx]) + OE_WEIGHT * uniform_cross_entropy(logits[len(idx):])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def _export(net, splits, dest: Path) -> None:
    from cnn_ocr.export import export_model

    block = {"name": "test-cnn", "version": "1", "run_id": None, "alias": None,
             "test_accuracy": None, "data_version": splits.name}
    export_model(net, "base_cnn", val=(splits.val_x[:2000], splits.val_y[:2000]),
                 test_images=splits.test_x[:256], dest=dest, model_block=block)


OOD_N_TRAIN = 8_000
OOD_DETECTOR = "msp"
OE_WEIGHT = 0.5
OE_PER_FAMILY = 150  # generated negatives per family (cnn_ocr/data/negatives.py) the not-a-digit model trains with


def _oe_negatives(train_x: np.ndarray) -> np.ndarray:
    """Generated not-a-digit drawings, with fixed settings (params.yaml's may change without retraining this)."""
    from cnn_ocr.config import NegativesParams
    from cnn_ocr.data.negatives import build

    p = NegativesParams(version="negatives-v1", source_version="v2.0", seed=5, canvas_px=280, pen_width=[0.05, 0.09],
                        dark_on_light=0.35, photo=0.2, train_per_family=OE_PER_FAMILY, val_per_family=1)
    return build(p, train_x)["train"].x


def _ood_net():
    from cnn_ocr.models.base_cnn import BaseCNN

    return BaseCNN(16, 3, True, 64, 0.1)


def _export_with_detector(net, splits, dest: Path) -> None:
    from cnn_ocr.export import export_model
    from cnn_ocr.ood.graph import Detector, torch_scores
    from cnn_ocr.ood.metrics import fit_threshold

    val_x, val_y = splits.val_x[:2000], splits.val_y[:2000]
    threshold = fit_threshold(torch_scores(net, Detector(OOD_DETECTOR, 0.0), val_x), 0.05)
    block = {"name": "test-cnn-ood", "version": "1", "data_version": splits.name}
    export_model(net, "base_cnn", val=(val_x, val_y), test_images=splits.test_x[:256], dest=dest,
                 model_block=block, detector=Detector(OOD_DETECTOR, threshold))


# The code that shapes the cached model: the recipe (this file), preprocessing, the model definitions and
# training code, the export and its spec, calibration. Patterns, so that files added or renamed are covered.
SHAPING_CODE = ("tests/service_model.py", "cnn_ocr/preprocess.py", "cnn_ocr/export*.py", "cnn_ocr/spec.py",
                "cnn_ocr/spec/**/*.py", "cnn_ocr/calibration.py", "cnn_ocr/families.py", "cnn_ocr/models/**/*.py",
                "cnn_ocr/fit/**/*.py", "cnn_ocr/ood/**/*.py", "cnn_ocr/data/negatives.py", "cnn_ocr/data/drawing.py",
                "cnn_ocr/data/shapes.py", "cnn_ocr/data/hershey.py")


def shaping_files() -> list[Path]:
    """The source files whose content the cache key covers, in a stable order."""
    return sorted({f for pattern in SHAPING_CODE for f in ROOT.glob(pattern) if f.is_file()})


def cache_key() -> str:
    """Changes whenever the recipe or any code that shapes the exported model changes (path and content)."""
    digest = hashlib.sha256()
    for f in shaping_files():
        digest.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def trained_model_dir(splits) -> Path:
    """Folder with model.onnx + spec.json of the small CNN (trained once, then cached)."""
    return _cached(CACHE / cache_key(), lambda final: _export(
        _train(splits.train_x[:N_TRAIN], splits.train_y[:N_TRAIN]), splits, final))


def ood_model_dir(splits) -> Path:
    """Folder with model.onnx (logits + "ood_score") + spec.json ("ood" block, threshold refusing 5 % of validation
    digits) of a small base CNN trained briefly on real MNIST with outlier exposure (trained once, then cached)."""
    x, y = splits.train_x[:OOD_N_TRAIN], splits.train_y[:OOD_N_TRAIN]
    return _cached(CACHE / f"{cache_key()}-ood", lambda final: _export_with_detector(
        _train(x, y, _ood_net, epochs=2, negatives=_oe_negatives(x)), splits, final))


def _cached(final: Path, build) -> Path:
    """`final`, built once by `build(final)` under a lock that concurrent test sessions share."""
    if (final / "spec.json").is_file():
        return final
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "spec.json").is_file():
            build(final)
    return final


def copy_model(src: Path, dest: Path, version: str) -> Path:
    """A copy of a model folder whose spec claims another version (a "new" registry version)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "model.onnx", dest / "model.onnx")
    spec = json.loads((src / "spec.json").read_text())
    spec["model"]["version"] = version
    (dest / "spec.json").write_text(json.dumps(spec))
    return dest


def point(link: Path, target: Path) -> None:
    """Atomically repoint the symlink `link` at `target` (how a deployment switches model folders)."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def nan_model(dest: Path, spec_from: Path) -> Path:
    """A valid ONNX graph whose logits are NaN: it loads, and must fail the smoke test."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((784, 10), np.nan, np.float32), "W")
    shape = numpy_helper.from_array(np.array([-1, 784], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "W"], ["logits"])],
        "nan", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [weights, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    dest.mkdir(parents=True)
    onnx.save(model, dest / "model.onnx")
    shutil.copy2(spec_from / "spec.json", dest / "spec.json")
    return dest


def corrupt_model(dest: Path, spec_from: Path) -> Path:
    """A folder whose model.onnx is not ONNX at all."""
    dest.mkdir(parents=True)
    (dest / "model.onnx").write_bytes(b"this is not an onnx file" * 100)
    shutil.copy2(spec_from / "spec.json", dest / "spec.json")
    return dest
