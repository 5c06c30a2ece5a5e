"""`ocr reproduce RUN_ID`: train a tracked run again from what it recorded and compare the metrics.

The run's `params.json` artifact gives every parameter and the seed; its tags give the family, the data
version with its content and DVC hashes, the device and the Git commit. The local data must match the
recorded hashes (else the user is told which `dvc checkout` restores it); a different commit or a dirty tree
only warns. The new run carries the tag `reproduces=<RUN_ID>`. On CPU the metrics are identical.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from cnn_ocr.config import Params
from cnn_ocr.tracking.git import git_tags
from cnn_ocr.tracking.reading import RunRecord, download_artifacts, get_run

log = logging.getLogger(__name__)

# Deterministic outcomes of a run (timings are not).
COMPARED = ("test_accuracy", "val_accuracy", "train_accuracy", "overfit_gap", "test_loss", "val_loss",
            "train_loss", "macro_f1", "min_digit_recall", "best_epoch", "epochs_run", "n_parameters")
INFORMATIVE = ("training_time_s", "inference_ms_per_image")


class ReproduceError(RuntimeError):
    """The run cannot be reproduced here; the message says what to do."""


@dataclass(frozen=True)
class Reproduction:
    """The original run, the new one, and their metrics side by side."""

    original: RunRecord
    new_run_id: str
    new_metrics: dict[str, float]

    def rows(self) -> list[tuple[str, float | None, float | None, bool | None]]:
        """(metric, original, new, equal) for compared metrics; equal is None for timings."""
        out: list[tuple[str, float | None, float | None, bool | None]] = []
        for key in COMPARED + INFORMATIVE:
            old, new = self.original.metrics.get(key), self.new_metrics.get(key)
            if old is None and new is None:
                continue
            out.append((key, old, new, None if key in INFORMATIVE else old == new))
        return out

    @property
    def identical(self) -> bool:
        return all(eq for _, _, _, eq in self.rows() if eq is not None)


def recorded_params(run: RunRecord) -> Params:
    """The exact params a run was trained with (its `params.json` artifact)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download_artifacts(run.run_id, "params.json", Path(tmp))
        except Exception:  # the store raises several types for a missing artifact
            raise ReproduceError(f"run {run.run_id} has no params.json artifact; it was not made by `ocr train`") from None
        doc = json.loads(Path(path).read_text())
    try:
        return Params.model_validate(doc["params"])
    except (KeyError, ValidationError) as exc:
        commit = run.tags.get("git_commit", "?")
        raise ReproduceError(f"the params recorded by run {run.run_id} do not fit this code ({exc.__class__.__name__}); "
                             f"check out its commit first: git checkout {commit}") from None


def check_data(run: RunRecord, params: Params) -> None:
    """Refuse unless the local data version has the content (and DVC) hash the run recorded."""
    from cnn_ocr.data import data_version
    from cnn_ocr.data.raw_store import CacheError

    name = run.tags.get("data_version")
    if not name:
        raise ReproduceError(f"run {run.run_id} did not record its data version")
    try:
        local = data_version(name, params.data, verify=True)
    except CacheError as exc:
        raise ReproduceError(str(exc)) from None
    rec_dvc, rec_content = run.tags.get("data_dvc_hash"), run.tags.get("data_content_hash")
    dvc_differs = rec_dvc not in (None, "untracked") and local.dvc_hash not in (None, rec_dvc)
    if dvc_differs or (rec_content and rec_content != local.content_hash):
        commit = run.tags.get("git_commit", "<commit>")
        raise ReproduceError(
            f"local data {name} does not match run {run.run_id} (recorded DVC hash {rec_dvc}, content "
            f"{(rec_content or '?')[:12]}; local DVC hash {local.dvc_hash}, content {local.content_hash[:12]}); "
            f"restore the run's data with: git checkout {commit} -- dvc.lock && dvc checkout {local.path}")


def code_warnings(run: RunRecord) -> list[str]:
    """Warnings when the code here is not the code the run was made with."""
    here = git_tags()
    out = []
    recorded = run.tags.get("git_commit", "unknown")
    if recorded != here["git_commit"]:
        out.append(f"the run was made at commit {recorded[:12]}, the working tree is at {here['git_commit'][:12]}; "
                   f"results may differ (git checkout {recorded[:12]} to match)")
    if run.tags.get("git_dirty") == "true":
        out.append("the run was made with uncommitted changes; they are not recorded")
    if here["git_dirty"] == "true":
        out.append("the working tree has uncommitted changes")
    return out


def reproduce_run(run_id: str, warn: Callable[[str], None] = log.warning) -> Reproduction:
    """Train `run_id` again as a new run tagged `reproduces=<run_id>`; returns both metric sets."""
    from cnn_ocr.train import train_model

    run = get_run(run_id)
    family = run.tags.get("family")
    if run.status != "FINISHED" or not family:
        raise ReproduceError(f"run {run_id} is not a finished training run (status {run.status})")
    params = recorded_params(run)
    if run.tags.get("device") == "cpu" and params.device != "cpu":
        params = params.model_copy(update={"device": "cpu"})
    check_data(run, params)
    for message in code_warnings(run):
        warn(message)
    result = train_model(family, params, experiment=run.experiment, run_name=f"{run.name}-reproduction",
                         tags={"reproduces": run_id})
    return Reproduction(run, result.run_id, get_run(result.run_id).metrics)  # as stored, like the original
