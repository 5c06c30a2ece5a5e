"""Choosing, registering and promoting the production model.

The rule: among finished training runs, the highest *validation* accuracy wins, ties go to the smaller gap
between training and validation accuracy, and a run slower than the latency budget is not eligible. The test
set is reported, never used to choose. (The product's original rule ranked by test accuracy; it stays
available as `select.rank_by: test_accuracy`, off by default, because it lets the test set pick the model.)
A winner is registered (ONNX export + parity check) and then passes the promotion gate: it takes
`production` only if it beats the current production version on the same metric by the margin and stays
within the latency budget; otherwise it gets `challenger` with the reason. `force` overrides the gate, on record.
The gate also holds the refusal targets: at registration the exported graph (which outputs the not-a-digit
score, `cnn_ocr.ood.registration`) is run on the validation digits and the validation negatives, and a version
refusing fewer than `select.min_negative_refusal` of the negatives, or more than `select.max_digit_refusal` of
the digits, is not promoted. A version without these figures is refused or allowed by `select.unscored`.
Selection registers the candidates in rank order until one meets the refusal targets (at most REFUSAL_TRIES).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cnn_ocr import registry
from cnn_ocr.config import Params, SelectParams
from cnn_ocr.data.versions import Splits
from cnn_ocr.export import ExportResult
from cnn_ocr.ood.registration import DIGITS_REFUSED, NEGATIVES_REFUSED, refusal_failure
from cnn_ocr.registry import CHALLENGER, PRODUCTION, ModelVersionInfo, RegistryError
from cnn_ocr.spec import ONNX_FILE
from cnn_ocr.tracking.reading import RunRecord, get_run, search_runs
from cnn_ocr.tracking.writing import log_artifacts

log = logging.getLogger(__name__)

REQUIRED_METRICS = ("val_accuracy", "train_accuracy", "test_accuracy", "overfit_gap", "inference_ms_per_image")
VERSION_METRIC_TAGS = REQUIRED_METRICS
RANK_METRICS = {"val_accuracy": "validation accuracy", "test_accuracy": "test accuracy"}
VERSION_RUN_TAGS = ("data_version", "git_commit", "family")
REFUSAL_FIGURES = (DIGITS_REFUSED, NEGATIVES_REFUSED)
REFUSAL_TRIES = 5  # candidates registered, best first, looking for one that meets the refusal targets


class SelectionError(RuntimeError):
    """No run can be selected or promoted; the message says why."""


@dataclass(frozen=True)
class Candidate:
    """A run considered for production and whether the latency budget allows it."""

    run: RunRecord
    eligible: bool
    note: str
    rank_by: str = "val_accuracy"

    @property
    def sort_key(self) -> tuple[float, float, int, str]:
        m = self.run.metrics
        return (-m[self.rank_by], selection_gap(m, self.rank_by), -self.run.start_time, self.run.run_id)


def selection_gap(metrics: dict[str, float], rank_by: str) -> float:
    """The overfitting gap the rule breaks ties with, in points: train minus the ranking split's accuracy.

    Ranking by validation uses train - validation, so the test set takes no part in the choice.
    """
    if rank_by == "test_accuracy":
        return metrics["overfit_gap"]
    return round((metrics["train_accuracy"] - metrics[rank_by]) * 100, 6)


@dataclass(frozen=True)
class GateDecision:
    """Whether a version may take production, and why."""

    passed: bool
    reason: str


@dataclass(frozen=True)
class Outcome:
    """What `select` / `promote` did."""

    version: ModelVersionInfo
    alias: str | None
    reason: str
    forced: bool = False


def is_candidate(run: RunRecord, dataset: str) -> bool:
    """A finished training run of this dataset with the selection metrics (no tuning trial, no re-run)."""
    return (
        run.status == "FINISHED"
        and all(k in run.metrics for k in REQUIRED_METRICS)
        and run.tags.get("tune.role") != "trial"
        and "reproduces" not in run.tags
        and run.tags.get("family") is not None
        and run.tags.get("dataset", dataset) == dataset
    )


def rank_candidates(runs: list[RunRecord], latency_budget_ms: float, dataset: str = "mnist",
                    rank_by: str = "val_accuracy") -> list[Candidate]:
    """Candidates best first: highest `rank_by` accuracy, then smaller overfitting gap; ineligible ones last."""
    if rank_by not in RANK_METRICS:
        raise SelectionError(f"select.rank_by must be one of {', '.join(RANK_METRICS)}, not {rank_by!r}")
    out = []
    for run in (r for r in runs if is_candidate(r, dataset)):
        ms = run.metrics["inference_ms_per_image"]
        ok = ms <= latency_budget_ms
        note = f"{ms:.2f} ms/image" + ("" if ok else f" > budget {latency_budget_ms:g} ms")
        out.append(Candidate(run, ok, note, rank_by))
    return sorted(out, key=lambda c: (not c.eligible, c.sort_key))


def winner(candidates: list[Candidate]) -> Candidate:
    """The first eligible candidate; `SelectionError` when there is none."""
    for cand in candidates:
        if cand.eligible:
            return cand
    if not candidates:
        raise SelectionError("no finished training runs to select from; run `ocr train --model <family>` first")
    raise SelectionError(f"none of {len(candidates)} runs meets the latency budget (fastest: "
                         f"{min(c.run.metrics['inference_ms_per_image'] for c in candidates):.2f} ms/image)")


def promotion_gate(candidate: dict[str, float], production: dict[str, float] | None, production_version: int | None,
                   sel: SelectParams) -> GateDecision:
    """May a version with metrics `candidate` replace the production version with metrics `production`?"""
    ms = candidate["inference_ms_per_image"]
    if ms > sel.latency_budget_ms:
        return GateDecision(False, f"{ms:.2f} ms/image exceeds the latency budget of {sel.latency_budget_ms:g} ms")
    refused = refusal_failure(candidate, sel)
    if refused is not None:
        return GateDecision(False, refused)
    key = sel.rank_by
    what = RANK_METRICS[key]
    acc = candidate[key]
    if production is None:
        return GateDecision(True, f"first production model: {what} {acc:.2%}, {ms:.2f} ms/image")
    gain = round((acc - production[key]) * 100, 6)
    versus = f"{what} {acc:.2%} vs {production[key]:.2%} of production v{production_version}"
    if gain <= 0 or gain < sel.margin_pp:
        return GateDecision(False, f"{versus}: gain {gain:+.2f} points, below the margin of {sel.margin_pp:g}")
    return GateDecision(True, f"{versus}: gain {gain:+.2f} points >= margin {sel.margin_pp:g}, {ms:.2f} ms/image")


def version_tags(run: RunRecord, temperature: float, max_abs_diff: float, n_images: int,
                 ood: dict[str, float | str] | None = None) -> dict[str, str]:
    """Tags stored on a registered version (`ood`: the detector, its threshold and the refusal figures)."""
    tags = {k: f"{run.metrics[k]:.6g}" for k in VERSION_METRIC_TAGS}
    tags.update({k: run.tags.get(k, "unknown") for k in VERSION_RUN_TAGS})
    tags.update({"temperature": f"{temperature:.6g}", "onnx_parity_max_abs_diff": f"{max_abs_diff:.3g}",
                 "onnx_parity_images": str(n_images), "run_experiment": run.experiment})
    # the threshold at full precision: it is the decision boundary spec.json carries; the shares rounded
    tags.update({k: v if isinstance(v, str) else repr(float(v)) if k == "ood_threshold" else f"{v:.6g}"
                 for k, v in (ood or {}).items()})
    return tags


def _export(run_id: str, params: Params, dest: Path) -> tuple[RunRecord, ExportResult, Splits]:
    from cnn_ocr.data import load_version
    from cnn_ocr.export import export_model
    from cnn_ocr.ood.registration import build_detector
    from cnn_ocr.spec import trained_at_from_ms
    from cnn_ocr.tracking.reading import load_model

    run = get_run(run_id)
    if run.status != "FINISHED" or "family" not in run.tags or "test_accuracy" not in run.metrics:
        raise SelectionError(f"run {run_id} is not a finished training run (status {run.status}); nothing to export")
    family, data_name = run.tags["family"], run.tags.get("data_version", "v2.0")
    splits = load_version(data_name, params.data)
    if run.tags.get("data_content_hash") not in (None, splits.version.content_hash):
        log.warning("local data %s differs from the run's (content hash); parity still uses local images", data_name)
    block = {"name": params.select.registered_model, "family": family, "run_id": run_id,
             "test_accuracy": run.metrics["test_accuracy"], "data_version": data_name,
             "trained_at": trained_at_from_ms(run.start_time)}
    model = load_model(run_id)
    res = export_model(model, family, val=(splits.val_x, splits.val_y),
                       test_images=splits.test_x[: params.export.parity_images], dest=dest, model_block=block,
                       tolerance=params.export.parity_tolerance, detector=build_detector(model, family, params, splits),
                       max_digit_refusal=params.ood.max_digit_refusal)
    return run, res, splits


def export_run(run_id: str, params: Params, dest: Path) -> tuple[RunRecord, ExportResult]:
    """Export a finished training run's model into folder `dest` (model.onnx + spec.json, parity-checked), its
    graph also outputting the not-a-digit score, the threshold fitted on the validation digits."""
    run, res, _ = _export(run_id, params, dest)
    return run, res


def _ood_tags(res: ExportResult, splits: Splits, params: Params) -> dict[str, float | str]:
    from cnn_ocr.ood.registration import refusal_figures, validation_negatives

    if res.ood is None:
        return {}
    figures = refusal_figures(res.folder / ONNX_FILE, res.ood.threshold, splits.val_x, validation_negatives(params))
    return {"ood_detector": res.ood.detector, "ood_threshold": res.ood.threshold, **figures}


def register_run(run_id: str, params: Params) -> tuple[ModelVersionInfo, bool]:
    """Register a run's model (export to ONNX with its detector, parity check, artifacts under onnx/, the refusal
    figures as version tags); reuse an existing version.

    Returns (version, created). Raises `ExportError` if the ONNX graph does not match the framework.
    """
    name = params.select.registered_model
    existing = registry.find_version_for_run(name, run_id)
    if existing is not None:
        return existing, False
    with tempfile.TemporaryDirectory() as tmp:
        run, res, splits = _export(run_id, params, Path(tmp) / "onnx")
        ood = _ood_tags(res, splits, params)
        log_artifacts(run_id, res.folder, registry.ONNX_ARTIFACT_DIR)
    tags = version_tags(run, res.temperature, res.parity.max_abs_diff, res.parity.n_images, ood)
    info = registry.create_version(name, run_id, tags, description=f"{run.tags['family']} from run {run_id}")
    return info, True


def export_target(params: Params, *, alias: str | None = None, version: int | None = None,
                  run_id: str | None = None, out: Path | None = None) -> tuple[Path, str]:
    """Write model.onnx + spec.json for a registered version (by alias or number) or a run; returns (folder, what)."""
    name = params.select.registered_model
    if run_id is not None:
        dest = out or Path("models") / f"run-{run_id[:12]}"
        _, res = export_run(run_id, params, dest)
        return dest, f"run {run_id}, parity max diff {res.parity.max_abs_diff:.2e} on {res.parity.n_images} images"
    info = registry.resolve_alias(name, alias) if alias else registry.get_version(name, int(version))
    default = params.export.production_dir if alias == PRODUCTION else Path("models") / (alias or f"v{info.version}")
    dest = registry.download_onnx(info, out or default)
    return dest, f"{name} v{info.version}" + (f" @{alias}" if alias else "")


def _metrics(info: ModelVersionInfo) -> dict[str, float]:
    """The version's run metrics and the refusal figures measured at its registration."""
    figures = {k: float(info.tags[k]) for k in REFUSAL_FIGURES if k in info.tags}
    return {**get_run(info.run_id).metrics, **figures}


def promote(info: ModelVersionInfo, sel: SelectParams, *, force: bool = False, action: str = "promote") -> Outcome:
    """Apply the promotion gate to a registered version and move `production` or `challenger` accordingly."""
    name = info.name
    current = registry.alias_version(name, PRODUCTION)
    if current == info.version:
        return Outcome(info, PRODUCTION, f"v{info.version} already holds production")
    prod_metrics = _metrics(registry.get_version(name, current)) if current is not None else None
    gate = promotion_gate(_metrics(info), prod_metrics, current, sel)
    if gate.passed or force:
        why = gate.reason if gate.passed else f"forced past the gate: {gate.reason}"
        registry.move_alias(name, PRODUCTION, info.version, action=action if gate.passed else "force", why=why)
        return Outcome(info, PRODUCTION, why, forced=force and not gate.passed)
    if registry.alias_version(name, CHALLENGER) != info.version:
        registry.move_alias(name, CHALLENGER, info.version, action="challenger", why=gate.reason)
    return Outcome(info, CHALLENGER, gate.reason)


def select_production(params: Params, *, force: bool = False) -> tuple[Outcome, list[Candidate]]:
    """Rank the candidate runs, register the best one that meets the refusal targets (else the winner) and put
    it through the promotion gate."""
    sel = params.select
    ranked = rank_candidates(search_runs(sel.experiments), sel.latency_budget_ms, params.data.dataset,
                             sel.rank_by)
    winner(ranked)  # SelectionError when no candidate is eligible
    return promote(_meeting_refusal_targets(ranked, params), sel, force=force, action="select"), ranked


def _meeting_refusal_targets(ranked: list[Candidate], params: Params) -> ModelVersionInfo:
    """Register the eligible candidates in rank order (at most REFUSAL_TRIES) until one meets the refusal
    targets, and return it; when none does, the first (the gate then keeps it out of production, saying why)."""
    first = None
    for cand in [c for c in ranked if c.eligible][:REFUSAL_TRIES]:
        info, _ = register_run(cand.run.run_id, params)
        first = first or info
        why = refusal_failure(_metrics(info), params.select)
        if why is None:
            return info
        log.warning("%s run %s (v%d) %s; trying the next candidate", cand.run.tags.get("family"),
                    cand.run.run_id, info.version, why)
    if first is None:
        raise SelectionError("no eligible candidate to register")
    return first


def production_summary(name: str, outcome: Outcome) -> dict:
    """What production is after a selection, and what happened to the candidate (for `metrics/production.json`)."""
    prod = registry.resolve_alias(name, PRODUCTION)
    metrics = _metrics(prod)
    return {"production_version": prod.version, "production_run_id": prod.run_id,
            "production_family": prod.tags.get("family"), **{k: metrics[k] for k in REQUIRED_METRICS},
            **{k: metrics[k] for k in REFUSAL_FIGURES if k in metrics},
            "candidate_version": outcome.version.version, "candidate_alias": outcome.alias,
            "forced": outcome.forced, "reason": outcome.reason}


def rollback(params: Params, to_version: int | None = None, why: str = "") -> dict:
    """Move production back (see `registry.rollback`); `SelectionError` with the registry's reason if impossible."""
    try:
        return registry.rollback(params.select.registered_model, to_version, why)
    except RegistryError as exc:
        raise SelectionError(str(exc)) from None
