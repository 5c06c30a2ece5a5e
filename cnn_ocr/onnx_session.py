"""The ONNX Runtime session every served model runs in: the service, batch OCR, the benchmarks and export checks.

Tuned for low-latency CPU inference; the inference benchmark measures exactly this session.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def session_options(threads: int = 0) -> Any:
    """Session options for low-latency CPU inference: full graph optimization, sequential execution,
    `threads` intra-op threads (0 = every core this process may use), no inter-op pool, no spinning."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Spinning threads burn the other core between requests; in a server that is the other worker's core.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def make_session(onnx_path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session with `session_options(threads)`."""
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), session_options(threads), providers=["CPUExecutionProvider"])
