"""`ocr reproduce RUN_ID`: train a tracked run again from what it recorded and compare the metrics.

The run's family, params and data are read back by `cnn_ocr.rerun` (shared with `ocr train --resume`): the
local data must match the recorded hashes (else the user is told which `dvc checkout` restores it). Its tags
give the device and the Git commit: a different commit or a dirty tree only warns. The new run carries the
tag `reproduces=<RUN_ID>`. On CPU the metrics are identical.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from cnn_ocr.rerun import RerunError, recorded_data, recorded_run, train_again
from cnn_ocr.tracking.git import git_tags
from cnn_ocr.tracking.reading import RunRecord, get_run

log = logging.getLogger(__name__)

# Deterministic outcomes of a run (timings are not).
COMPARED = ("test_accuracy", "val_accuracy", "train_accuracy", "overfit_gap", "test_loss", "val_loss",
            "train_loss", "macro_f1", "min_digit_recall", "best_epoch", "epochs_run", "n_parameters")
INFORMATIVE = ("training_time_s", "inference_ms_per_image")


# The run cannot be reproduced here; the message says what to do.
ReproduceError = RerunError


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
    rec = recorded_run(run_id)
    run = rec.run
    if run.status != "FINISHED" or not run.tags.get("family"):
        raise ReproduceError(f"run {run_id} is not a finished training run (status {run.status})")
    if run.tags.get("device") == "cpu" and rec.params.device != "cpu":
        rec = replace(rec, params=rec.params.model_copy(update={"device": "cpu"}))
    splits = recorded_data(rec)
    for message in code_warnings(run):
        warn(message)
    result = train_again(rec, splits, f"{run.name}-reproduction", {"reproduces": run_id})
    return Reproduction(run, result.run_id, get_run(result.run_id).metrics)  # as stored, like the original
