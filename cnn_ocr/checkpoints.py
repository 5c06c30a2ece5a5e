"""Training checkpoints: saved after every epoch, logged to the run when training ends early, resumed from
(`cnn_ocr.rerun.resume_training`).

A checkpoint holds the whole training state (weights, optimizer, LR schedule, random generators, early-
stopping state, history), so `ocr train --resume RUN_ID` reaches the same final metrics as a run that was
never interrupted (on CPU). Checkpoints are read back with `torch.load(weights_only=True)`: tensors and
plain values only, never arbitrary pickled objects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnn_ocr.project import project_root
from cnn_ocr.tracking.reading import download_artifacts
from cnn_ocr.tracking.writing import log_artifact, set_tags

log = logging.getLogger(__name__)

CHECKPOINT_DIR_ENV = "OCR_CHECKPOINT_DIR"
ARTIFACT_DIR = "checkpoint"
FILE_NAME = "last.pt"


class CheckpointError(RuntimeError):
    """A run has no checkpoint to continue from; the message says why."""


def checkpoint_root() -> Path:
    """Local checkpoints: `OCR_CHECKPOINT_DIR`, else `<project>/.cache/checkpoints`."""
    return Path(os.environ.get(CHECKPOINT_DIR_ENV) or project_root() / ".cache" / "checkpoints")


def local_path(run_id: str) -> Path:
    """Where the last checkpoint of `run_id` is kept on this machine."""
    return checkpoint_root() / run_id / FILE_NAME


class Saver:
    """Writes the state after each epoch (atomically); logs the last one to the run if training stops early."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.path = local_path(run_id)
        self.epoch = 0

    def __call__(self, state: dict) -> None:
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        self.epoch = int(state["epoch"])

    @contextlib.contextmanager
    def logged_on_failure(self) -> Iterator[None]:
        """On any exit by exception (Ctrl-C, SIGTERM, pruning, errors): log the last checkpoint, re-raise."""
        try:
            yield
        except BaseException:
            if self.epoch:
                try:
                    log_artifact(self.path, ARTIFACT_DIR)
                    set_tags({"checkpoint_epoch": self.epoch,
                              "resume_with": f"ocr train --resume {self.run_id}"})
                except Exception as exc:  # the run still ends in the right state; the local copy remains
                    log.warning("could not log the checkpoint of run %s (%s); it is kept at %s",
                                self.run_id, exc, self.path)
            raise


def load_checkpoint(run_id: str) -> dict[str, Any]:
    """The last checkpoint of `run_id`: the local copy, else the one logged with the run."""
    import torch

    path = local_path(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        if not path.is_file():
            try:
                path = download_artifacts(run_id, f"{ARTIFACT_DIR}/{FILE_NAME}", Path(tmp))
            except Exception:
                raise CheckpointError(f"run {run_id} has no checkpoint (none at {local_path(run_id)} and none "
                                      "logged with the run); only CNN runs stopped after a complete epoch can be "
                                      "resumed") from None
        return torch.load(path, map_location="cpu", weights_only=True)
