"""What every benchmark result carries: machine, library versions, git commit, date; statistics; targets."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnn_ocr.evaluate import time_calls  # noqa: F401 - one timing loop for the library and the benchmarks

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
CACHE_DIR = ROOT / "benchmarks" / ".cache"  # trained weights shared between benchmarks (git-ignored)
SCHEMA_VERSION = 1
LIBRARIES = ("torch", "numpy", "scikit-learn", "onnx", "onnxruntime", "fastapi", "uvicorn", "mlflow", "dvc")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def core_count() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def git_commit() -> tuple[str, bool]:
    """(commit, dirty) of the working tree; ("unknown", True) outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        from cnn_ocr.tracking.git import git_status_args  # results and pipeline outputs do not count as changes

        dirty = subprocess.run(["git", *git_status_args()], cwd=ROOT, capture_output=True, text=True, check=True)
        return sha.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries the figures depend on."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def torch_device() -> str:
    """'cuda (<name>)' when a GPU is visible to torch, else 'cpu'."""
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


_START_LOAD: dict[str, float] = {}


def _load_1m() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def mark_start() -> None:
    """Record the 1-minute load average now, before a benchmark adds its own load."""
    _START_LOAD["1m"] = _load_1m()


def environment(device: str) -> dict[str, Any]:
    """The machine block of a result (the load average recorded by `mark_start`, else the current one)."""
    commit, dirty = git_commit()
    load = (_START_LOAD.get("1m", _load_1m()),)
    return {
        "machine": platform.node(), "platform": platform.platform(), "cpu_model": cpu_model(),
        "cores": core_count(), "device": device, "load_average_1m_at_start": round(load[0], 2),
        "libraries": library_versions(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit, "git_dirty": dirty,
    }


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median over repeats with its spread (min, max, n) and the raw values."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals),
            "values": [round(v, 6) for v in vals]}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on the sorted values."""
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[k])


def target(name: str, value: float | None, limit: float, unit: str, higher_is_better: bool, note: str = "") -> dict:
    """One target line: met when `value` reaches `limit` in the right direction (never met without a value)."""
    met = value is not None and (value >= limit if higher_is_better else value <= limit)
    return {"name": name, "value": value, "limit": limit, "unit": unit,
            "direction": ">=" if higher_is_better else "<=", "met": met, "note": note}


def write_result(name: str, mode: str, figures: dict[str, Any], targets: list[dict], device: str,
                 settings: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    """Write `<out_dir>/<name>.json` (atomically) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"schema_version": SCHEMA_VERSION, "benchmark": name, "mode": mode, **environment(device),
               "settings": settings, "figures": figures, "targets": targets}
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n")
    tmp.replace(path)
    return path
