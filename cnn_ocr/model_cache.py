"""A local copy of registered model versions, so a model can be served while the tracking store is down.

`fetch_version` resolves `models:/<name>@<alias>` in the registry and copies that version's `model.onnx` +
`spec.json` (`cnn_ocr.spec`) into `<cache_dir>/<name>/<version>/`, once per version. Beside the version
folders a pointer file `<alias>.alias.json` records which version the alias named when the registry was last
reached; `cached_version` follows it when the registry cannot be reached.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cnn_ocr.atomic_files import atomic_dir, atomic_write_bytes
from cnn_ocr.spec import ONNX_FILE, SPEC_FILE, is_model_folder

POINTER_SUFFIX = ".alias.json"


@dataclass(frozen=True)
class CachedVersion:
    """A registered version's folder in the local cache, its version and where it came from (for logs)."""

    folder: Path
    version: str
    source: str


def safe_part(part: str) -> str:
    """`part` usable as one path component: other characters become "_", at most 100 characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)[:100] or "_"


def model_cache_dir(cache_dir: Path, name: str) -> Path:
    """The folder holding the cached versions of registered model `name`."""
    return Path(cache_dir) / safe_part(name)


def registry_uri(name: str, alias: str) -> str:
    """The registry address of the version `alias` points at."""
    return f"models:/{name}@{alias}"


def fetch_version(cache_dir: Path, name: str, alias: str, timeout_s: float) -> CachedVersion:
    """Resolve `alias` in the registry, copy that version into the cache unless it is there, record the pointer.

    Raises whatever the registry raises when it cannot be reached or the alias is missing (`RegistryError`,
    or the tracking client's own errors); `timeout_s` bounds each HTTP request to a tracking server.
    """
    # Fail fast when the tracking server is down (MLflow's defaults retry for minutes); explicit env wins.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout_s)))
    from cnn_ocr.registry import download_onnx, resolve_alias

    info = resolve_alias(name, alias)
    base = model_cache_dir(cache_dir, name)
    final = base / safe_part(str(info.version))
    if not is_model_folder(final):
        with atomic_dir(final) as tmp:
            got = Path(download_onnx(info, tmp))
            if got.resolve() != tmp.resolve():
                for file in (ONNX_FILE, SPEC_FILE):
                    shutil.copy2(got / file, tmp / file)
    pointer = {"name": name, "alias": alias, "version": str(info.version), "run_id": info.run_id,
               "folder": final.name, "resolved_at": time.time()}
    atomic_write_bytes(base / f"{safe_part(alias)}{POINTER_SUFFIX}", json.dumps(pointer).encode())
    return CachedVersion(final, str(info.version), f"registry {registry_uri(name, alias)} (version {info.version})")


def cached_version(cache_dir: Path, name: str, alias: str) -> CachedVersion | None:
    """The version `alias` pointed at when the registry was last reached, if its folder is in the cache."""
    base = model_cache_dir(cache_dir, name)
    pointer = base / f"{safe_part(alias)}{POINTER_SUFFIX}"
    try:
        folder = base / safe_part(json.loads(pointer.read_text())["folder"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not is_model_folder(folder):
        return None
    return CachedVersion(folder, folder.name, f"local cache {folder}")
