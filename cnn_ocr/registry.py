"""The MLflow model registry (`OCR-Production-Model`), its aliases and their history.

The only module that talks to MLflow's model registry; runs are read and written by `cnn_ocr.tracking`.
Versions point at a run's logged model; the
run also holds the exported `onnx/model.onnx` + `onnx/spec.json` that the service loads. Aliases
(`production`, `challenger`) replace the deprecated stages. Every alias move is appended to a JSON history
kept as a tag of the registered model (bounded in size, oldest entries dropped first).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cnn_ocr.atomic_files import atomic_dir
from cnn_ocr.tracking import store
from cnn_ocr.tracking.reading import download_artifacts
from cnn_ocr.tracking.store import MODEL_ARTIFACT, StoreError

log = logging.getLogger(__name__)

REGISTERED_MODEL = "OCR-Production-Model"
PRODUCTION = "production"
CHALLENGER = "challenger"
ONNX_ARTIFACT_DIR = "onnx"
HISTORY_TAG = "alias_history"
HISTORY_MAX_CHARS = 5000  # a registered-model tag holds 5000 characters in MLflow's SQL schema


class RegistryError(StoreError):
    """A registry request that cannot be served (no such version or alias); the message says what to do."""


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version: `alias` is the alias it was resolved by (or its first alias)."""

    name: str
    version: int
    run_id: str
    alias: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


def _info(mv: Any, alias: str | None = None) -> ModelVersionInfo:
    aliases = tuple(getattr(mv, "aliases", None) or ())
    return ModelVersionInfo(mv.name, int(mv.version), mv.run_id, alias or (aliases[0] if aliases else None),
                            dict(mv.tags or {}), aliases)


def list_versions(name: str = REGISTERED_MODEL) -> list[ModelVersionInfo]:
    """Every version of the registered model, oldest first, with its aliases."""
    client = store.client()
    found = client.search_model_versions(f"name = '{name}'", max_results=10000)
    # search results may omit aliases: read them from the registered model itself
    by_version: dict[int, list[str]] = {}
    if found:
        for alias, version in (client.get_registered_model(name).aliases or {}).items():
            by_version.setdefault(int(version), []).append(alias)
    infos = []
    for mv in found:
        aliases = tuple(sorted(by_version.get(int(mv.version), [])))
        infos.append(ModelVersionInfo(name, int(mv.version), mv.run_id, aliases[0] if aliases else None,
                                      dict(mv.tags or {}), aliases))
    return sorted(infos, key=lambda i: i.version)


def get_version(name: str, version: int) -> ModelVersionInfo:
    """One version; `RegistryError` if it does not exist."""
    for info in list_versions(name):
        if info.version == int(version):
            return info
    raise RegistryError(f"{name} has no version {version}; see `ocr models list`")


def find_version_for_run(name: str, run_id: str) -> ModelVersionInfo | None:
    """The newest version registered from `run_id`, if any."""
    matches = [i for i in list_versions(name) if i.run_id == run_id]
    return matches[-1] if matches else None


def resolve_alias(name: str, alias: str) -> ModelVersionInfo:
    """The version an alias points at (e.g. `models:/OCR-Production-Model@production`)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = store.client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            raise RegistryError(
                f"no version of {name!r} has the alias {alias!r} in {store.tracking_uri()}; "
                "run `ocr select` (or `make run`) to register and promote a model"
            ) from None
        raise RegistryError(f"the registry at {store.tracking_uri()} failed: {str(exc).splitlines()[0]}") from None
    return _info(mv, alias)


@contextlib.contextmanager
def exported_files(info: ModelVersionInfo, required: tuple[str, ...], what: str) -> Iterator[Path]:
    """The version's `onnx/` artifact folder, downloaded into a temporary folder for the `with` block;
    `RegistryError` (saying what to do) when the run has none or it lacks one of the `required` files."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            src = download_artifacts(info.run_id, ONNX_ARTIFACT_DIR, Path(tmp))
        except Exception as exc:  # the store raises several types for a missing artifact
            raise RegistryError(f"{info.name} v{info.version} (run {info.run_id}) has no {what}: {exc}") from None
        missing = [f for f in required if not (src / f).is_file()]
        if missing:
            raise RegistryError(f"{info.name} v{info.version}: onnx/ lacks {', '.join(missing)}; re-register it")
        yield src


def download_onnx(info: ModelVersionInfo, dest: Path) -> Path:
    """Write `model.onnx` + `spec.json` (its "model" block filled in) into folder `dest`; returns `dest`."""
    from cnn_ocr.spec import ONNX_FILE, SPEC_FILE, SpecError, read_spec, write_spec

    with exported_files(info, (ONNX_FILE,), "ONNX export") as src:
        try:
            spec = read_spec(src)
            spec = spec.with_model(name=info.name, version=info.version, run_id=info.run_id, alias=info.alias,
                                   **_missing_facts(info, spec.model))
        except SpecError as exc:
            raise RegistryError(f"{info.name} v{info.version}: {SPEC_FILE} cannot be served: {exc}") from None
        with atomic_dir(Path(dest)) as out:
            shutil.copyfile(src / ONNX_FILE, out / ONNX_FILE)
            write_spec(out, spec)
    return Path(dest)


def _missing_facts(info: ModelVersionInfo, block: Any) -> dict[str, Any]:
    """For a spec exported before it recorded them: the test accuracy (a version tag) and when the model was
    trained (its run's start), from the registry."""
    from cnn_ocr.spec import trained_at_from_ms
    from cnn_ocr.tracking.reading import get_run

    facts: dict[str, Any] = {}
    try:
        if block.test_accuracy is None and "test_accuracy" in info.tags:
            facts["test_accuracy"] = float(info.tags["test_accuracy"])
        if block.trained_at is None:
            facts["trained_at"] = trained_at_from_ms(get_run(info.run_id).start_time)
    except (ValueError, StoreError) as exc:
        log.warning("%s v%s: %s", info.name, info.version, exc)
    return facts


def _logged_model_id(client: Any, run_id: str) -> str | None:
    """The id of the model the run logged last (MLflow 3 keeps logged models apart from run artifacts)."""
    outputs = getattr(client.get_run(run_id), "outputs", None)
    models = sorted(outputs.model_outputs, key=lambda m: m.step) if outputs and outputs.model_outputs else []
    return models[-1].model_id if models else None


def create_version(name: str, run_id: str, tags: dict[str, Any], description: str = "") -> ModelVersionInfo:
    """Register the run's logged model as a new version of `name` with `tags` (`models:/NAME/N` loads it)."""
    from mlflow.exceptions import MlflowException

    client = store.client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Handwritten-digit classifier served by the OCR app.")
    model_id = _logged_model_id(client, run_id)
    source = f"models:/{model_id}" if model_id else f"runs:/{run_id}/{MODEL_ARTIFACT}"
    mv = client.create_model_version(name, source, run_id=run_id, tags={k: str(v) for k, v in tags.items()},
                                     description=description, model_id=model_id)
    return _info(mv)


# --- alias moves and their history ----------------------------------------------------------------------


def read_history(name: str = REGISTERED_MODEL) -> list[dict[str, Any]]:
    """The alias-move log, oldest first (empty when the model or the log does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        raw = store.client().get_registered_model(name).tags.get(HISTORY_TAG)
    except MlflowException:
        return []
    return json.loads(raw) if raw else []


def _bounded(entries: list[dict[str, Any]]) -> str:
    while True:
        text = json.dumps(entries, separators=(",", ":"))
        if len(text) <= HISTORY_MAX_CHARS or len(entries) <= 1:
            return text
        entries = entries[1:]


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def alias_version(name: str, alias: str) -> int | None:
    """The version holding `alias`, or None."""
    try:
        return resolve_alias(name, alias).version
    except RegistryError:
        return None


def move_alias(name: str, alias: str, version: int, *, action: str, why: str) -> dict[str, Any]:
    """Point `alias` at `version` and append the move (who, what, when, why, from -> to) to the history."""
    client = store.client()
    get_version(name, version)
    previous = alias_version(name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "by": _actor(), "alias": alias,
             "from": previous, "to": int(version), "action": action, "why": why[:300]}
    entries = [*read_history(name), entry]
    if alias == PRODUCTION and alias_version(name, CHALLENGER) == int(version):
        client.delete_registered_model_alias(name, CHALLENGER)
        entries.append({**entry, "alias": CHALLENGER, "from": int(version), "to": None, "action": "clear",
                        "why": f"v{version} became production"})
    client.set_registered_model_tag(name, HISTORY_TAG, _bounded(entries))
    log.info("%s: %s v%s -> v%s (%s)", name, alias, previous, version, action)
    return entry


def rollback_target(name: str, current: int) -> int:
    """The version production held before `current` got it (rollbacks themselves are skipped)."""
    for entry in reversed(read_history(name)):
        if entry["alias"] == PRODUCTION and entry["to"] == current and entry["action"] != "rollback":
            if entry["from"] is None:
                raise RegistryError(f"v{current} was the first production version of {name}; nothing to roll back to")
            return int(entry["from"])
    raise RegistryError(f"the history of {name} does not say what preceded v{current}; pass --to VERSION")


def rollback(name: str, to_version: int | None = None, why: str = "") -> dict[str, Any]:
    """Move `production` back to the version it held before (or to `to_version`); returns the history entry."""
    current = alias_version(name, PRODUCTION)
    if current is None:
        raise RegistryError(f"{name} has no production version to roll back")
    target = int(to_version) if to_version is not None else rollback_target(name, current)
    if target == current:
        raise RegistryError(f"v{target} already holds production")
    return move_alias(name, PRODUCTION, target, action="rollback", why=why or f"rollback from v{current}")
