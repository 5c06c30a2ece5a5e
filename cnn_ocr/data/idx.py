"""Reader and writer for the IDX format MNIST and its relatives ship in (optionally gzip-compressed)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

# IDX type codes -> numpy big-endian dtypes.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}


class IdxError(ValueError):
    """A file that is not valid IDX."""


def parse_idx(blob: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (raw, not compressed) into a native-endian array."""
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0:
        raise IdxError(f"{name}: not an IDX file (bad magic number)")
    type_code, ndim = blob[2], blob[3]
    if type_code not in _DTYPES or ndim == 0:
        raise IdxError(f"{name}: unknown IDX type 0x{type_code:02x} or zero dimensions")
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise IdxError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", blob[4:header])
    dtype = np.dtype(_DTYPES[type_code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(blob) != expected:
        raise IdxError(f"{name}: expected {expected} bytes for shape {shape}, found {len(blob)} (truncated or corrupt)")
    return np.frombuffer(blob, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, transparently decompressing `.gz`."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IdxError(f"{path.name}: corrupt gzip stream ({exc})") from None
    return parse_idx(raw, path.name)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (big-endian, as the format requires)."""
    dtype = array.dtype.newbyteorder("=")
    if dtype not in _CODES:
        raise IdxError(f"dtype {array.dtype} has no IDX type code")
    header = bytes([0, 0, _CODES[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype.newbyteorder(">")).tobytes()
