"""Source tests: verification, clear one-line errors naming the source, nothing left behind, cache repair,
and the IDX reader on real IDX files written elsewhere (Debian's Fashion-MNIST)."""

from __future__ import annotations

import gzip
import http.server
import os
import pickle
import resource
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from cnn_ocr.data import raw_store, sources
from cnn_ocr.data.idx import IdxError, encode_idx, read_idx
from cnn_ocr.data.raw_store import fetch, load_raw
from cnn_ocr.data.sources import SourceError, from_mirrors, load_mnist_pickle

OCR = [str(Path(".venv/bin/ocr").resolve())] if Path(".venv/bin/ocr").exists() else ["ocr"]


def _copy_fashion(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.gz"):
        shutil.copy(f, dst / f.name)
    return dst


def test_idx_reader_on_debian_fashion_mnist(fashion_dir):
    train_x = read_idx(fashion_dir / "train-images-idx3-ubyte.gz")
    train_y = read_idx(fashion_dir / "train-labels-idx1-ubyte.gz")
    test_y = read_idx(fashion_dir / "t10k-labels-idx1-ubyte.gz")
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == np.uint8
    assert np.bincount(train_y).tolist() == [6000] * 10
    assert np.bincount(test_y).tolist() == [1000] * 10
    raw = gzip.decompress((fashion_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert encode_idx(test_y) == raw  # byte-exact round trip


def test_idx_reader_rejects_truncated_and_random(tmp_path):
    good = encode_idx(np.arange(12, dtype=np.uint8).reshape(3, 2, 2))
    (tmp_path / "t").write_bytes(good[:-3])
    with pytest.raises(IdxError, match="truncated or corrupt"):
        read_idx(tmp_path / "t")
    (tmp_path / "r").write_bytes(os.urandom(200))
    with pytest.raises(IdxError):
        read_idx(tmp_path / "r")


def _run_fetch(*args: str, raw_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*OCR, "data", "fetch", *args, "--set", f"data.raw_dir={raw_dir}"],
                          capture_output=True, text=True, timeout=120)


def test_cli_fetch_fashion_from_idx_then_cache_hit(fashion_dir, tmp_path):
    raw_dir = tmp_path / "raw"
    first = _run_fetch("--source", "idx", "--path", str(fashion_dir), "--dataset", "fashion-mnist", raw_dir=raw_dir)
    assert first.returncode == 0, first.stderr
    assert "fetched from 'idx'" in first.stdout
    second = _run_fetch("--source", "idx", "--path", str(fashion_dir), "--dataset", "fashion-mnist", raw_dir=raw_dir)
    assert "valid cache" in second.stdout
    assert load_raw(raw_dir, "fashion-mnist").train_x.shape == (60000, 28, 28)


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_bad_idx_source_gives_one_line_error_and_leaves_nothing(fashion_dir, tmp_path, damage):
    src = _copy_fashion(fashion_dir, tmp_path / "src")
    target = src / "train-labels-idx1-ubyte.gz"
    blob = target.read_bytes()
    target.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else os.urandom(len(blob)))
    raw_dir = tmp_path / "raw"
    res = _run_fetch("--source", "idx", "--path", str(src), "--dataset", "fashion-mnist", raw_dir=raw_dir)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith(("INFO", "DEBUG"))]
    assert len(lines) == 1 and "source 'idx'" in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert _left_in(raw_dir) == []


def _left_in(folder: Path) -> list[str]:
    """Every file and folder under `folder` (hidden ones too); [] when it does not exist."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def _file_size_limit(limit_bytes: int):
    """For subprocess' preexec_fn: writing past `limit_bytes` fails with EFBIG (Python ignores SIGXFSZ), as on a
    full disk."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_fetch_failing_mid_write_leaves_nothing_behind(fashion_dir, tmp_path):
    """The source is good but the cache cannot be written whole (47 MB of pixels, 1 MiB allowed): the fetch fails
    and neither the dataset folder nor a partial temporary one stays; the next fetch starts clean."""
    raw_dir = tmp_path / "raw"
    (raw_dir / "mnist").mkdir(parents=True)  # another dataset's cache is left alone
    (raw_dir / "mnist" / "keep").write_bytes(b"x")
    res = subprocess.run([*OCR, "data", "fetch", "--source", "idx", "--path", str(fashion_dir), "--dataset",
                          "fashion-mnist", "--set", f"data.raw_dir={raw_dir}"], capture_output=True, text=True,
                         timeout=120, preexec_fn=_file_size_limit(1 << 20))
    assert res.returncode != 0, res.stdout
    assert _left_in(raw_dir) == ["mnist", "mnist/keep"], res.stderr[-2000:]
    again = _run_fetch("--source", "idx", "--path", str(fashion_dir), "--dataset", "fashion-mnist", raw_dir=raw_dir)
    assert again.returncode == 0 and "fetched from 'idx'" in again.stdout, again.stderr


def test_corrupted_cache_is_detected_and_fetched_again(fashion_dir, tmp_path):
    raw_dir = tmp_path / "raw"
    fetch("fashion-mnist", raw_dir, ["idx"], fashion_dir)
    victim = raw_dir / "fashion-mnist" / "test_y.npy"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x07")
    with pytest.raises(raw_store.CacheError, match="ocr data fetch"):
        load_raw(raw_dir, "fashion-mnist")
    res = fetch("fashion-mnist", raw_dir, ["idx"], fashion_dir)
    assert res.source == "idx"
    assert np.bincount(load_raw(raw_dir, "fashion-mnist").test_y).tolist() == [1000] * 10


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def wrong_mirror(monkeypatch):
    """A real HTTP mirror on loopback that serves bytes with the wrong checksum, plus a closed port."""
    _Handler.payload = gzip.compress(os.urandom(1000))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    closed = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    closed_port = closed.server_address[1]
    closed.server_close()
    bases = [f"http://127.0.0.1:{closed_port}/", f"http://127.0.0.1:{server.server_address[1]}/"]
    monkeypatch.setitem(sources.MIRRORS, "mnist", (bases, sources.MIRRORS["mnist"][1]))
    yield bases
    server.shutdown()


def test_unreachable_and_wrong_checksum_mirrors_fail_fast_and_clearly(wrong_mirror, tmp_path):
    with pytest.raises(SourceError) as err:
        from_mirrors("mnist", timeout_s=2)
    msg = str(err.value)
    assert msg.startswith("source 'mirror'") and "checksum mismatch" in msg and "refused" in msg.lower()
    with pytest.raises(SourceError):
        fetch("mnist", tmp_path / "raw", ["mirror"], None, 2)
    assert not (tmp_path / "raw" / "mnist").exists()


def test_pickle_with_wrong_hash_is_never_opened(tmp_path):
    opened = tmp_path / "opened"
    evil = gzip.compress(pickle.dumps(_Evil(str(opened))))
    with pytest.raises(SourceError, match="sha256"):
        load_mnist_pickle(evil)
    assert not opened.exists()


def test_restricted_unpickler_refuses_crafted_payload(tmp_path):
    import io

    opened = tmp_path / "opened"
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        sources._ArrayOnlyUnpickler(io.BytesIO(pickle.dumps(_Evil(str(opened))))).load()
    assert not opened.exists()
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(sources._ArrayOnlyUnpickler(io.BytesIO(pickle.dumps(arr))).load(), arr)


class _Evil:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))
