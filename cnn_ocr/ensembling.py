"""`ocr ensemble`: finished CNN runs combined into one model and logged as a run of its own.

The members are the best finished CNN runs by validation accuracy (test accuracy never chooses them) from
`ensemble.member_experiments`, or runs named explicitly. Their averaged probabilities form one network
(`cnn_ocr.models.ensemble.Ensemble`), scored exactly like a trained model (`train.final_metrics`) and logged
with family `ensemble` in `ensemble.experiment`. With `ensemble.views`, each member is also averaged over those
fixed shifts and rotations of the input (test-time augmentation; one member and its views is allowed). Listed in
`select.experiments`, it is a production candidate under the same rule and latency budget as every other run,
and registers as one ONNX graph.
"""

from __future__ import annotations

import json
import logging

from cnn_ocr.config import Params
from cnn_ocr.data import load_version
from cnn_ocr.families import ENSEMBLE, TORCH_FAMILIES
from cnn_ocr.fit import FitResult
from cnn_ocr.select import is_candidate
from cnn_ocr.tracking.git import git_tags
from cnn_ocr.tracking.reading import RunRecord, get_run, load_model, search_runs
from cnn_ocr.tracking.runs import current_run_id, tracked_run
from cnn_ocr.tracking.writing import log_dict, log_params
from cnn_ocr.train import TrainResult, final_metrics, log_outputs, train_eval_indices

log = logging.getLogger(__name__)


class EnsembleError(RuntimeError):
    """No ensemble can be built from the runs at hand; the message says why."""


def _is_member(run: RunRecord, dataset: str) -> bool:
    return is_candidate(run, dataset) and run.tags.get("family") in TORCH_FAMILIES and "val_accuracy" in run.metrics


def _fewest_runs(params: Params) -> int:
    """Runs an ensemble needs: 2, or 1 whose views are averaged with it."""
    return 1 if params.ensemble.views else 2


def pick_members(params: Params) -> list[RunRecord]:
    """The `ensemble.members` best finished CNN runs by validation accuracy (then the newer run)."""
    runs = [r for r in search_runs(params.ensemble.member_experiments) if _is_member(r, params.data.dataset)]
    runs.sort(key=lambda r: (-r.metrics["val_accuracy"], -r.start_time))
    need = _fewest_runs(params)
    if len(runs) < need:
        raise EnsembleError(f"an ensemble needs at least {need} finished CNN run{'s' * (need > 1)} in "
                            f"{params.ensemble.member_experiments}; found {len(runs)}: train some with "
                            "`ocr train --model improved_cnn`")
    return runs[: params.ensemble.members]


def _members_by_id(run_ids: list[str], params: Params) -> list[RunRecord]:
    runs = [get_run(run_id) for run_id in run_ids]
    bad = [r.run_id for r in runs if not _is_member(r, params.data.dataset)]
    if bad:
        raise EnsembleError(f"not finished CNN training runs on {params.data.dataset}: {', '.join(bad)}")
    if len(runs) < _fewest_runs(params):
        raise EnsembleError("an ensemble needs at least 2 runs, or ensemble.views to average one run's views")
    return runs


def build_ensemble(params: Params, run_ids: list[str] | None = None) -> TrainResult:
    """Average the members' probabilities, score the result like a trained model, log it as one run."""
    from cnn_ocr.models.ensemble import Ensemble, with_views

    members = _members_by_id(run_ids, params) if run_ids else pick_members(params)
    views = params.ensemble.views
    data_name = members[0].tags.get("data_version", "v2.0")  # validation and test splits are shared by versions
    splits = load_version(data_name.split("+")[0], params.data)  # a feedback-extended name: its base version
    model = Ensemble(with_views([load_model(m.run_id) for m in members], views)).eval()
    train_idx = train_eval_indices(len(splits.train_y), params)
    fit = FitResult(train_time_s=float(sum(m.metrics.get("training_time_s", 0.0) for m in members)))
    ids = [m.run_id for m in members]
    tags = {**splits.version.as_tags(), **git_tags(), "family": ENSEMBLE, "device": "cpu",
            "members": ",".join(ids), "mlflow.note.content": _note(members, views)}
    name = f"ensemble-{len(members)}" + (f"x{1 + len(views)}views" if views else "")
    with tracked_run(params.ensemble.experiment, name, tags) as run:
        log_params({"members": ids, "member_families": [m.tags["family"] for m in members],
                    "n_members": len(members), "member_selection": "validation accuracy",
                    "views": [list(v) for v in views], "n_views": 1 + len(views),
                    **{f"evaluation.{k}": v for k, v in params.models.evaluation.model_dump().items()}})
        log_dict({"members": [{"run_id": m.run_id, "family": m.tags["family"], "experiment": m.experiment,
                               **{k: m.metrics.get(k) for k in ("val_accuracy", "test_accuracy")}}
                              for m in members]}, "members.json")
        metrics, test_pred, cm = final_metrics(model, ENSEMBLE, params, splits, "cpu", train_idx, fit)
        metrics["best_member_test_accuracy"] = max(m.metrics["test_accuracy"] for m in members)
        log_outputs(model, ENSEMBLE, params, splits, fit, metrics, test_pred, cm)
        run_id = current_run_id() or run.info.run_id
    log.info("ensemble run %s: %s", run_id, json.dumps({k: round(v, 5) for k, v in metrics.items()}))
    return TrainResult(run_id, ENSEMBLE, metrics, model)


def _note(members: list[RunRecord], views: list[tuple[float, ...]]) -> str:
    parts = [f"{m.tags['family']} {m.run_id[:8]} (val {m.metrics['val_accuracy']:.2%}, test "
             f"{m.metrics['test_accuracy']:.2%})" for m in members]
    seen = "" if not views else (f", each on its input and {len(views)} views (dx, dy pixels, degrees): "
                                 + ", ".join(str(tuple(v)) for v in views))
    return f"Averaged probabilities of {len(members)} run{'s' * (len(members) > 1)}{seen}: " + "; ".join(parts)
