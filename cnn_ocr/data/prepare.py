"""Build the processed dataset versions from the raw cache, deterministically from params.

- v2.0 "normalized, no augmentation": train / validation / test splits, stored as uint8; the model-side
  normalization (mean/std) is `cnn_ocr.preprocess.to_model_input`, defined once.
- v3.0 "augmented": v2.0 plus `augment.copies` randomly transformed copies of the training split.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnn_ocr.atomic_files import atomic_dir
from cnn_ocr.config import DataParams
from cnn_ocr.data.augment import augment_images
from cnn_ocr.data.layout import META, VERSIONS, version_dir
from cnn_ocr.data.raw_store import MANIFEST, load_raw, save_npy_set, verify_folder, write_json
from cnn_ocr.preprocess import preprocessing_spec

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def split_train_val(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic disjoint (train, val) index arrays, each in ascending order."""
    if not 0 < val_size < n:
        raise ValueError(f"validation_size must be between 1 and {n - 1}, got {val_size}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def write_version(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> str:
    """Write one version (six .npy splits + meta.json with hashes and class counts) atomically.

    Returns its content hash. `meta` carries at least `name` and `description`.
    """
    with atomic_dir(folder) as tmp:
        files = save_npy_set(tmp, arrays)
        content_hash = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()
        counts = {s: np.bincount(arrays[f"{s}_y"], minlength=10).tolist() for s in ("train", "val", "test")}
        write_json(tmp / META, {**meta, "files": files, "counts": counts, "content_hash": content_hash})
    return content_hash


def _named(name: str) -> dict[str, str]:
    return {"name": name, "description": VERSIONS[name]}


def prepare(data: DataParams, on_progress: Progress | None = None) -> dict[str, Path]:
    """Build v2.0 and v3.0 under `data.processed_dir`; return {version: folder}."""
    raw = load_raw(data.raw_dir, data.dataset)
    raw_manifest = verify_folder(Path(data.raw_dir) / data.dataset, MANIFEST)
    raw_hash = hashlib.sha256(str(sorted(raw_manifest["files"].items())).encode()).hexdigest()
    tr_idx, va_idx = split_train_val(len(raw.train_x), data.validation_size, data.split_seed)
    base = {
        "train_x": raw.train_x[tr_idx], "train_y": raw.train_y[tr_idx].astype(np.int64),
        "val_x": raw.train_x[va_idx], "val_y": raw.train_y[va_idx].astype(np.int64),
        "test_x": raw.test_x, "test_y": raw.test_y.astype(np.int64),
    }
    common = {"dataset": data.dataset, "raw_sha256": raw_hash, "preprocessing": preprocessing_spec(),
              "validation_size": data.validation_size, "split_seed": data.split_seed}
    write_version(version_dir("v2.0", data), base, {**common, **_named("v2.0"), "n_original_train": len(tr_idx)})
    log.info("wrote v2.0 (%d train / %d val / %d test)", len(tr_idx), len(va_idx), len(raw.test_x))

    aug = data.augment
    copies = []
    for c in range(aug.copies):
        step = (lambda done, total, c=c: on_progress(f"augment copy {c + 1}/{aug.copies}", done, total)) if on_progress else None
        copies.append(augment_images(base["train_x"], aug, seed=aug.seed + c, on_progress=step))
    v3 = dict(base)
    v3["train_x"] = np.concatenate([base["train_x"], *copies])
    v3["train_y"] = np.concatenate([base["train_y"]] * (aug.copies + 1))
    write_version(version_dir("v3.0", data), v3, {**common, **_named("v3.0"), "n_original_train": len(tr_idx),
                                             "augment": aug.model_dump(mode="json")})
    log.info("wrote v3.0 (%d train incl. %d augmented)", len(v3["train_x"]), len(v3["train_x"]) - len(tr_idx))
    return {name: version_dir(name, data) for name in VERSIONS}
