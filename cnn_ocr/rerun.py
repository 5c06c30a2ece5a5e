"""Training a recorded run again: `ocr train --resume RUN` and `ocr reproduce RUN` both start here.

A run made by `ocr train` recorded everything needed to train it again: its family and every parameter
(the `params.json` artifact), its experiment, and the data version with its content and DVC hashes (tags).
`recorded_run` reads those back from the store, `recorded_data` loads the same data and refuses when it is
not the data the run saw, and `train_again` trains with them, as a new run of the same experiment.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cnn_ocr import checkpoints
from cnn_ocr.config import Params
from cnn_ocr.data import Splits, load_training_data
from cnn_ocr.data.raw_store import CacheError
from cnn_ocr.families import data_version_of, is_torch
from cnn_ocr.tracking.reading import RunRecord, download_artifacts, get_run
from cnn_ocr.tracking.store import StoreError
from cnn_ocr.train import TrainResult, train_model

log = logging.getLogger(__name__)


class RerunError(RuntimeError):
    """A recorded run that cannot be trained again here; the message says why and what to do."""


# The names `ocr train --resume` and `ocr reproduce` report this error under.
ResumeError = RerunError


@dataclass(frozen=True)
class RecordedRun:
    """A tracked training run as the store has it, with the family and exact params it was trained with."""

    run: RunRecord
    family: str
    params: Params


def _params_doc(run: RunRecord) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download_artifacts(run.run_id, "params.json", Path(tmp))
        except Exception:  # the store raises several types for a missing artifact
            raise RerunError(f"run {run.run_id} has no params.json artifact; it was not made by `ocr train`") from None
        return json.loads(Path(path).read_text())


def recorded_run(run_id: str) -> RecordedRun:
    """Read run `run_id`, its family and its params (`params.json`) back from the tracking store."""
    try:
        run = get_run(run_id)
    except StoreError as exc:
        raise RerunError(str(exc)) from None
    doc = _params_doc(run)
    try:
        return RecordedRun(run, str(doc.get("family") or run.tags["family"]), Params.model_validate(doc["params"]))
    except (KeyError, ValidationError) as exc:
        commit = run.tags.get("git_commit", "?")
        raise RerunError(f"the params recorded by run {run_id} do not fit this code ({exc.__class__.__name__}); "
                         f"check out its commit first: git checkout {commit}") from None


def recorded_data(rec: RecordedRun) -> Splits:
    """The run's training data, loaded and verified; refused unless its hashes are the ones the run recorded."""
    run = rec.run
    try:
        splits = load_training_data(data_version_of(rec.params, rec.family), rec.params.data)
    except CacheError as exc:
        raise RerunError(str(exc)) from None
    local = splits.version
    rec_dvc, rec_content = run.tags.get("data_dvc_hash"), run.tags.get("data_content_hash")
    dvc_differs = rec_dvc not in (None, "untracked") and local.dvc_hash not in (None, rec_dvc)
    if dvc_differs or (rec_content and rec_content != local.content_hash):
        commit = run.tags.get("git_commit", "<commit>")
        raise RerunError(
            f"local data {splits.name} does not match run {run.run_id} (recorded DVC hash {rec_dvc}, content "
            f"{(rec_content or '?')[:12]}; local DVC hash {local.dvc_hash}, content {local.content_hash[:12]}); "
            f"restore the run's data with: git checkout {commit} -- dvc.lock && dvc checkout {local.path}")
    return splits


def train_again(rec: RecordedRun, splits: Splits, run_name: str, tags: dict[str, str], **kwargs: Any) -> TrainResult:
    """Train the recorded family and params on `splits` as a new run in the run's own experiment.

    `kwargs` go to `train_model` (a checkpoint to `resume` from, epoch / step callbacks).
    """
    return train_model(rec.family, rec.params, splits=splits, experiment=rec.run.experiment, run_name=run_name,
                       tags=tags, **kwargs)


def resume_training(run_id: str, **callbacks: Any) -> TrainResult:
    """Continue the interrupted CNN run `run_id` from its last checkpoint, as a new run tagged `resumed_from`.

    The params are the run's own; the data must still match the run's recorded hashes.
    `callbacks` are passed to `train_model` (epoch_callback, step_callback).
    """
    rec = recorded_run(run_id)
    if rec.run.status == "FINISHED":
        raise RerunError(f"run {run_id} already FINISHED; there is nothing to resume")
    if not is_torch(rec.family):
        raise RerunError(f"run {run_id} trained {rec.family!r}; only the CNN families can be resumed")
    try:
        state = checkpoints.load_checkpoint(run_id)
    except checkpoints.CheckpointError as exc:
        raise RerunError(str(exc)) from None
    splits = recorded_data(rec)
    log.info("resuming run %s of %s after epoch %d", run_id, rec.family, state["epoch"])
    tags = {"resumed_from": run_id, "resumed_after_epoch": str(state["epoch"])}
    return train_again(rec, splits, f"{rec.run.name or rec.family}-resumed", tags, resume=state, **callbacks)
