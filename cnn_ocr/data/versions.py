"""Loading processed dataset versions and naming them for the tracking layer (name + hashes)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from cnn_ocr.config import DataParams
from cnn_ocr.data.layout import META, VERSIONS, version_dir
from cnn_ocr.data.raw_store import CacheError, verify_folder

log = logging.getLogger(__name__)

DVC_LOCK = Path("dvc.lock")


@dataclass(frozen=True)
class DataVersion:
    """A processed dataset version: its name, where it lives and the hashes that identify it."""

    name: str
    path: Path
    content_hash: str
    dvc_hash: str | None
    dataset: str = "mnist"

    def as_tags(self) -> dict[str, str]:
        """Tags for a tracked run."""
        return {"data_version": self.name, "data_content_hash": self.content_hash,
                "data_dvc_hash": self.dvc_hash or "untracked", "dataset": self.dataset,
                "data_path": str(self.path)}


@dataclass(frozen=True)
class Splits:
    """Train / validation / test arrays of one version (uint8 images, int64 labels)."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    version: DataVersion
    meta: dict = field(default_factory=dict, repr=False)


def dvc_out_hash(path: Path, lock_file: Path = DVC_LOCK) -> str | None:
    """The md5 DVC recorded in dvc.lock for an output path, or None when DVC does not track it."""
    if not lock_file.is_file():
        return None
    lock = yaml.safe_load(lock_file.read_text()) or {}
    target = Path(path).as_posix().rstrip("/")
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if Path(out.get("path", "")).as_posix().rstrip("/") == target:
                return out.get("md5") or out.get("hash")
    return None


def read_meta(name: str, data: DataParams, verify: bool = True) -> dict:
    """The version's meta.json, after checking its files against their hashes (unless verify=False)."""
    folder = version_dir(name, data)
    try:
        return verify_folder(folder, META) if verify else json.loads((folder / META).read_text())
    except (CacheError, FileNotFoundError) as exc:
        raise CacheError(f"data version {name}: {exc}; run `dvc checkout {folder}` "
                         f"(or `ocr data prepare`) to restore it") from None


def data_version(name: str, data: DataParams, verify: bool = False) -> DataVersion:
    """Name and hashes of a processed version, for tracking."""
    meta = read_meta(name, data, verify=verify)
    folder = version_dir(name, data)
    return DataVersion(name, folder, meta["content_hash"], dvc_out_hash(folder), meta.get("dataset", "mnist"))


def load_version(name: str, data: DataParams) -> Splits:
    """Load a verified processed version into memory."""
    meta = read_meta(name, data, verify=True)
    folder = version_dir(name, data)
    arrays = {k: np.load(folder / f"{k}.npy", allow_pickle=False)
              for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    version = DataVersion(name, folder, meta["content_hash"], dvc_out_hash(folder), meta.get("dataset", "mnist"))
    return Splits(name=name, version=version, meta=meta, **arrays)


def load_training_data(name: str, data: DataParams) -> Splits:
    """`load_version(name)` with the train splits of `data.extra_train_versions` appended.

    The combined version is named `<name>+<extra>...` and its content hash covers every part, so a run
    trained on corrections is told apart from one trained without them.
    """
    splits = load_version(name, data)
    if not data.extra_train_versions:
        return splits
    extras = [load_version(extra, data) for extra in data.extra_train_versions]
    combined = "+".join([name, *data.extra_train_versions])
    digest = hashlib.sha256("".join(s.version.content_hash for s in [splits, *extras]).encode()).hexdigest()
    version = replace(splits.version, name=combined, content_hash=digest, dvc_hash=None)
    return replace(splits, name=combined, version=version,
                   train_x=np.concatenate([splits.train_x, *(e.train_x for e in extras)]),
                   train_y=np.concatenate([splits.train_y, *(e.train_y for e in extras)]))


def ensure_prepared(data: DataParams) -> None:
    """Fetch and prepare the data when a processed version is missing (used by tests and smoke runs)."""
    from cnn_ocr.data.prepare import prepare
    from cnn_ocr.data.raw_store import fetch

    if all((version_dir(v, data) / META).is_file() for v in VERSIONS):
        return
    fetch(data.dataset, data.raw_dir, list(data.sources), data.idx_path, data.mirror_timeout_s)
    prepare(data)
