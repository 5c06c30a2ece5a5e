"""One worker's job: read a list of files with the served model and return their result rows as a table.

Used by both engines (a process-pool worker and a Ray Data actor), so both give identical rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from cnn_ocr.batch.output import SCHEMA
from cnn_ocr.reader import ReadLimits, read_many


@dataclass(frozen=True)
class ModelRef:
    """Where the model is and what it is called (carried into every row)."""

    folder: str
    name: str
    version: str


def load_session_model(ref: ModelRef) -> Any:
    """The model with a one-thread ONNX Runtime session (one per worker; workers are the parallelism)."""
    from app.model_store import load_model_dir

    return load_model_dir(Path(ref.folder), threads=1, source=f"batch {ref.folder}")


def _read_file(path: str, max_bytes: int) -> bytes | str:
    try:
        size = Path(path).stat().st_size
        if size > max_bytes:
            return f"too_large: The file is {size:,} bytes; the limit is {max_bytes:,} bytes."
        return Path(path).read_bytes()
    except OSError as exc:
        return f"unreadable: {exc.strerror or type(exc).__name__}: {path}"


def read_rows(paths: Sequence[str], model: Any, ref: ModelRef, limits: ReadLimits) -> pa.Table:
    """Result rows for `paths`, in order; a file that cannot be read is a row with `error` set."""
    contents = [_read_file(p, limits.max_bytes) for p in paths]
    readable = [c for c in contents if isinstance(c, bytes)]
    ood = model.spec.ood
    answers = iter(read_many(readable, model.predict, limits, None if ood is None else ood.threshold))
    rows = []
    for path, content in zip(paths, contents, strict=True):
        answer = next(answers) if isinstance(content, bytes) else \
            {"text": None, "status": "error", "reason": None, "digits": [], "ood_score": None, "error": content}
        rows.append({"path": path, **answer, "model_name": ref.name, "model_version": ref.version})
    return pa.Table.from_pylist(rows, schema=SCHEMA)
