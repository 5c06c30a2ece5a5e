"""The line recognizer in the model registry: its own registered model (`params.crnn.registered_model`).

A version points at the `onnx/` folder of its training run (`model.onnx` + `line_spec.json`, as
`cnn_ocr.line_model` writes them); `models:/<name>@production` downloads exactly that folder. A version gets
`production` only when its ONNX export matched PyTorch within the tolerance; every alias move goes through
`cnn_ocr.registry.move_alias`, so the recognizer has the same alias history as the digit models.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_ocr.atomic_files import atomic_dir
from cnn_ocr.line_model import SPEC_FILE
from cnn_ocr.registry import (
    ONNX_ARTIFACT_DIR,
    PRODUCTION,
    ModelVersionInfo,
    RegistryError,
    exported_files,
    get_version,
    move_alias,
)
from cnn_ocr.tracking import store
from cnn_ocr.tracking.reading import list_artifacts

log = logging.getLogger(__name__)

ABOUT = "Line recognizer (CRNN + CTC) that reads a whole line of handwritten digits; used by /read."
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class Registered:
    """The version created and whether it was made `production` (and why, or why not)."""

    version: ModelVersionInfo
    promoted: bool
    why: str


def _create(name: str, run_id: str, tags: dict[str, Any]) -> ModelVersionInfo:
    from mlflow.exceptions import MlflowException

    client = store.client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=ABOUT)
    mv = client.create_model_version(name, f"runs:/{run_id}/{ONNX_ARTIFACT_DIR}", run_id=run_id,
                                     tags={k: str(v) for k, v in tags.items()},
                                     description=f"line recognizer from run {run_id}")
    return get_version(name, int(mv.version))


def register_recognizer(name: str, run_id: str, spec: dict[str, Any], tolerance: float) -> Registered:
    """Register run `run_id`'s `onnx/` folder as a new version of `name`, tagged with its scores, and move
    `production` to it when its parity (`spec["parity_max_abs_diff"]`) is within `tolerance`.

    `RegistryError` when the run holds no exported recognizer."""
    files = {Path(p).name for p in list_artifacts(run_id, ONNX_ARTIFACT_DIR)}
    if not {ONNX_FILE, SPEC_FILE} <= files:
        raise RegistryError(f"run {run_id} has no {ONNX_ARTIFACT_DIR}/{ONNX_FILE} + {SPEC_FILE}; "
                            "train the recognizer with `ocr crnn train`")
    gap = spec.get("parity_max_abs_diff")
    tags = {"kind": "line_recognizer", "parity_max_abs_diff": gap, "parity_tolerance": tolerance,
            **{k: spec[k] for k in ("test_string_accuracy", "train_seconds") if k in spec}}
    info = _create(name, run_id, tags)
    if gap is None or float(gap) > tolerance:
        why = f"ONNX parity {gap} is not within {tolerance:.0e}; production left where it was"
        log.warning("%s v%s: %s", name, info.version, why)
        return Registered(info, False, why)
    why = f"ONNX parity {float(gap):.1e} within {tolerance:.0e}"
    move_alias(name, PRODUCTION, info.version, action="promote", why=why)
    return Registered(get_version(name, info.version), True, why)


def download_recognizer(info: ModelVersionInfo, dest: Path) -> Path:
    """Write the version's `model.onnx` + `line_spec.json` into folder `dest` (atomically); returns `dest`."""
    with exported_files(info, (ONNX_FILE, SPEC_FILE), "recognizer") as src, atomic_dir(Path(dest)) as out:
        for file in (ONNX_FILE, SPEC_FILE):
            shutil.copyfile(src / file, out / file)
    return Path(dest)


def fetch_recognizer(cache_dir: Path, name: str, alias: str) -> Path:
    """The folder of the version `models:/<name>@<alias>` names, copied into `<cache_dir>/<name>/<version>/`
    once per version (`cnn_ocr.model_cache`'s layout); `RegistryError` when the alias is missing."""
    from cnn_ocr.model_cache import model_cache_dir, safe_part
    from cnn_ocr.registry import resolve_alias

    info = resolve_alias(name, alias)
    folder = model_cache_dir(cache_dir, name) / safe_part(str(info.version))
    if not ((folder / ONNX_FILE).is_file() and (folder / SPEC_FILE).is_file()):
        download_recognizer(info, folder)
    return folder
