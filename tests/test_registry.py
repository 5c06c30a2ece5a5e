"""Registry, selection rule, promotion gate, aliases, history and rollback on a real sqlite MLflow store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnn_ocr import registry, select
from cnn_ocr.config import load_params
from cnn_ocr.ensembling import pick_members
from cnn_ocr.registry import CHALLENGER, PRODUCTION, REGISTERED_MODEL, RegistryError
from cnn_ocr.spec import trained_at_from_ms
from cnn_ocr.tracking import reading, store
from cnn_ocr.tracking.reading import RunRecord

REQUIRED_VERSION_TAGS = {"test_accuracy", "overfit_gap", "inference_ms_per_image", "data_version", "git_commit"}


def _run(run_id, acc, gap, ms, start=0, test=None, **tags):
    """A finished run with validation accuracy `acc`, train - validation gap `gap` points, test accuracy `test`."""
    test = acc if test is None else test
    metrics = {"val_accuracy": acc, "train_accuracy": acc + gap / 100, "test_accuracy": test,
               "overfit_gap": round((acc + gap / 100 - test) * 100, 6), "inference_ms_per_image": ms}
    return RunRecord(run_id, "baseline-models", run_id, "FINISHED", start, {}, metrics,
                     {"family": "base_cnn", "dataset": "mnist", **tags})


def test_selection_rule_orders_by_accuracy_then_gap_within_the_latency_budget():
    runs = [
        _run("slow-best", 0.995, 0.1, 9.0),
        _run("acc-tie-big-gap", 0.990, 0.8, 1.0),
        _run("acc-tie-small-gap", 0.990, 0.2, 1.0),
        _run("worse", 0.980, 0.0, 0.5),
        _run("a-trial", 0.999, 0.0, 0.5, **{"tune.role": "trial"}),
        _run("a-rerun", 0.999, 0.0, 0.5, reproduces="x"),
        _run("fashion", 0.999, 0.0, 0.5, dataset="fashion-mnist"),
        RunRecord("failed", "baseline-models", "f", "FAILED", 0, {}, {"test_accuracy": 1.0}, {"family": "svm"}),
    ]
    ranked = select.rank_candidates(runs, latency_budget_ms=5.0)
    assert [c.run.run_id for c in ranked] == ["acc-tie-small-gap", "acc-tie-big-gap", "worse", "slow-best"]
    assert [c.eligible for c in ranked] == [True, True, True, False]
    assert select.winner(ranked).run.run_id == "acc-tie-small-gap"
    with pytest.raises(select.SelectionError, match="latency budget"):
        select.winner(select.rank_candidates(runs[:1], latency_budget_ms=5.0))
    with pytest.raises(select.SelectionError, match="ocr train"):
        select.winner([])


def test_the_test_set_never_chooses_by_default():
    runs = [_run("best-on-test", 0.990, 0.2, 1.0, test=0.999), _run("best-on-val", 0.992, 0.2, 1.0, test=0.980),
            _run("val-tie-but-smaller-test-gap", 0.990, 0.2, 1.0, test=0.990)]
    ranked = select.rank_candidates(runs, latency_budget_ms=5.0)
    assert select.winner(ranked).run.run_id == "best-on-val"
    # a tie on validation is broken by the train - validation gap (equal here), then by recency and id: not by test
    assert {c.run.run_id for c in ranked[1:]} == {"best-on-test", "val-tie-but-smaller-test-gap"}
    assert ranked[1].sort_key[:2] == ranked[2].sort_key[:2]
    seed_rule = select.rank_candidates(runs, latency_budget_ms=5.0, rank_by="test_accuracy")
    assert select.winner(seed_rule).run.run_id == "best-on-test"
    with pytest.raises(select.SelectionError, match="rank_by"):
        select.rank_candidates(runs, latency_budget_ms=5.0, rank_by="train_accuracy")


@pytest.mark.parametrize("rank_by", ["val_accuracy", "test_accuracy"])
def test_promotion_gate(rank_by):
    sel = load_params().select.model_copy(update={"margin_pp": 0.1, "latency_budget_ms": 2.0, "rank_by": rank_by})
    other = "test_accuracy" if rank_by == "val_accuracy" else "val_accuracy"
    cand = {rank_by: 0.9925, other: 0.5, "inference_ms_per_image": 1.0,
            "ood_val_digits_refused": 0.01, "ood_val_negatives_refused": 0.99}  # meets the refusal targets
    assert select.promotion_gate(cand, None, None, sel).passed
    assert select.promotion_gate(cand, {rank_by: 0.9915, other: 0.9}, 3, sel).passed  # +0.10 points: the margin
    below = select.promotion_gate(cand, {rank_by: 0.9920, other: 0.1}, 3, sel)
    assert not below.passed and "below the margin" in below.reason and "v3" in below.reason
    assert select.RANK_METRICS[rank_by] in below.reason
    slow = select.promotion_gate({**cand, "inference_ms_per_image": 2.5}, None, None, sel)
    assert not slow.passed and "latency budget" in slow.reason
    zero = sel.model_copy(update={"margin_pp": 0.0})
    assert not select.promotion_gate(cand, {rank_by: 0.9925, other: 0.0}, 3, zero).passed  # a tie never promotes


@pytest.fixture()
def two_runs(tracking_uri, tiny_splits, tiny_overrides):
    """A base CNN and an SVM trained on the tiny slice, tracked in a fresh store."""
    from cnn_ocr.train import train_model

    params = load_params(overrides=tiny_overrides)
    runs = {f: train_model(f, params, splits=tiny_splits) for f in ("base_cnn", "svm")}
    return params, runs


def test_register_select_gate_force_rollback_and_history(two_runs, tiny_splits, tiny_overrides, tmp_path):
    params, runs = two_runs
    with pytest.raises(RegistryError, match="ocr select"):
        registry.resolve_alias(REGISTERED_MODEL, PRODUCTION)

    # registration: ONNX export with parity, version tags, artifacts; a second call reuses the version
    info, created = select.register_run(runs["base_cnn"].run_id, params)
    assert created and info.version == 1 and REQUIRED_VERSION_TAGS <= set(info.tags)
    assert float(info.tags["test_accuracy"]) == pytest.approx(runs["base_cnn"].metrics["test_accuracy"])
    assert float(info.tags["onnx_parity_max_abs_diff"]) <= 1e-4
    assert sorted(reading.list_artifacts(info.run_id, "onnx")) == ["onnx/model.onnx", "onnx/spec.json"]
    assert select.register_run(runs["base_cnn"].run_id, params) == (info, False)

    # selection: the rule's winner gets production, recorded in the history
    outcome, ranked = select.select_production(params)
    best = max(runs.values(), key=lambda r: (r.metrics["test_accuracy"], -r.metrics["overfit_gap"]))
    assert outcome.alias == PRODUCTION and outcome.version.run_id == best.run_id
    assert {c.run.run_id for c in ranked} == {r.run_id for r in runs.values()}
    prod = registry.resolve_alias(REGISTERED_MODEL, PRODUCTION)
    assert prod.run_id == best.run_id and prod.alias == PRODUCTION

    # the service's path: download ONNX + spec and get the framework's predictions
    folder = registry.download_onnx(prod, tmp_path / "prod")
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["model"] == {"name": REGISTERED_MODEL, "version": prod.version, "alias": PRODUCTION,
                                  "run_id": best.run_id, "family": best.family, "data_version": "v2.0",
                                  "test_accuracy": best.metrics["test_accuracy"],
                                  "trained_at": trained_at_from_ms(reading.get_run(best.run_id).start_time)}
    import onnxruntime as ort

    from cnn_ocr.preprocess import to_model_input

    x = to_model_input(tiny_splits.test_x[:50])
    logits = ort.InferenceSession(str(folder / "model.onnx")).run(["logits"], {"input": x})[0]
    assert logits.shape == (50, 10)
    import mlflow  # the registered version also loads as an MLflow model (the native flavour, not the ONNX)

    native = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}@production")
    proba = np.asarray(native.predict(x if best.family != "svm" else x.reshape(len(x), -1)))
    assert proba.shape == (50, 10)

    # the loser fails the gate: challenger with the reason; then --force promotes it, on record
    other = next(r for r in runs.values() if r.run_id != best.run_id)
    other_info, _ = select.register_run(other.run_id, params)
    gated = select.promote(other_info, params.select)
    assert gated.alias == CHALLENGER and "below the margin" in gated.reason
    assert registry.alias_version(REGISTERED_MODEL, PRODUCTION) == prod.version
    forced = select.promote(other_info, params.select, force=True)
    assert forced.alias == PRODUCTION and forced.forced
    assert registry.alias_version(REGISTERED_MODEL, PRODUCTION) == other_info.version
    assert registry.alias_version(REGISTERED_MODEL, CHALLENGER) is None  # production and challenger never coincide

    # rollback: production goes back; then there is nothing earlier
    entry = select.rollback(params)
    assert (entry["from"], entry["to"], entry["action"]) == (other_info.version, prod.version, "rollback")
    with pytest.raises(select.SelectionError, match="first production version"):
        select.rollback(params)

    history = registry.read_history()
    assert [(e["alias"], e["action"]) for e in history] == [
        (PRODUCTION, "select"), (CHALLENGER, "challenger"), (PRODUCTION, "force"), (CHALLENGER, "clear"),
        (PRODUCTION, "rollback")]
    assert all(e["by"] and e["at"] and e["why"] for e in history)
    assert "forced past the gate" in history[2]["why"]

    cli = CliRunner()
    from cnn_ocr.cli import app

    listed = cli.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "production" in listed.output and best.family in listed.output
    shown = cli.invoke(app, ["models", "history"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0 and "rollback" in shown.output and "force" in shown.output
    sets = sum((["--set", o] for o in tiny_overrides), [])
    again = cli.invoke(app, ["select", "--summary-out", str(tmp_path / "production.json"), *sets])
    assert again.exit_code == 0 and "already holds production" in again.output
    summary = json.loads((tmp_path / "production.json").read_text())
    assert (summary["production_version"], summary["production_run_id"]) == (prod.version, best.run_id)
    assert summary["test_accuracy"] == best.metrics["test_accuracy"]
    bad = cli.invoke(app, ["rollback", "--to", "99"])
    assert bad.exit_code == 1 and "no version 99" in bad.output and "Traceback" not in bad.output


def test_history_stays_bounded(two_runs):
    params, runs = two_runs
    v1, _ = select.register_run(runs["base_cnn"].run_id, params)
    v2, _ = select.register_run(runs["svm"].run_id, params)
    for i in range(45):
        registry.move_alias(REGISTERED_MODEL, "staging", (v1, v2)[i % 2].version, action="test", why="x" * 80 + str(i))
    raw = store.client().get_registered_model(REGISTERED_MODEL).tags[registry.HISTORY_TAG]
    history = json.loads(raw)
    assert len(raw) <= registry.HISTORY_MAX_CHARS and 10 < len(history) < 45
    assert history[-1]["why"].endswith("44") and history[-1]["to"] == v1.version


def test_missing_run_and_version_are_one_line_errors(tracking_uri, tiny_overrides):
    cli = CliRunner()
    from cnn_ocr.cli import app

    res = cli.invoke(app, ["register", "--run-id", "0123456789abcdef", *sum((["--set", o] for o in tiny_overrides), [])])
    assert res.exit_code == 1 and "no run '0123456789abcdef'" in res.output and "Traceback" not in res.output
    res = cli.invoke(app, ["export", "--alias", PRODUCTION])
    assert res.exit_code == 1 and "ocr select" in res.output
    res = cli.invoke(app, ["export"])
    assert res.exit_code == 2 and "exactly one of" in res.output



def test_ensemble_of_cnn_runs_is_scored_logged_and_a_production_candidate(tracking_uri, tiny_splits, tiny_data_dir,
                                                                           tiny_overrides):
    """`ocr ensemble` averages the best CNN runs (by validation accuracy; the SVM is no member), logs a run that
    `ocr select` ranks with the others, and registers as one ONNX graph that matches PyTorch."""
    from cnn_ocr import evaluate
    from cnn_ocr.cli import app
    from cnn_ocr.preprocess import to_model_input
    from cnn_ocr.train import train_model

    params = load_params(overrides=tiny_overrides)
    first = train_model("base_cnn", params, splits=tiny_splits)
    few = CliRunner().invoke(app, ["ensemble", *[a for o in tiny_overrides for a in ("--set", o)]])
    assert few.exit_code == 1 and "at least 2 finished CNN runs" in few.output and "Traceback" not in few.output
    runs = [first, train_model("improved_cnn", params, splits=tiny_splits), train_model("svm", params, splits=tiny_splits)]

    done = CliRunner().invoke(app, ["ensemble", *[a for o in tiny_overrides for a in ("--set", o)]])
    assert done.exit_code == 0, done.output
    [ens] = reading.search_runs([params.ensemble.experiment])
    assert ens.tags["family"] == "ensemble" and ens.status == "FINISHED"
    assert sorted(ens.tags["members"].split(",")) == sorted(r.run_id for r in runs[:2])  # CNNs only
    logits = [evaluate.class_scores(reading.load_model(r.run_id), to_model_input(tiny_splits.test_x)) for r in runs[:2]]
    probs = np.mean([np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
                     for z in logits], axis=0)
    assert ens.metrics["test_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == tiny_splits.test_y))
    assert {"test_accuracy", "val_accuracy", "overfit_gap", "inference_ms_per_image"} <= set(ens.metrics)

    ranked = select.rank_candidates(reading.search_runs(params.select.experiments), params.select.latency_budget_ms)
    assert ens.run_id in [c.run.run_id for c in ranked]
    info, created = select.register_run(ens.run_id, params)
    assert created and info.tags["family"] == "ensemble" and float(info.tags["onnx_parity_max_abs_diff"]) <= 1e-4

    # one run and its views (test-time augmentation): the best CNN run by validation accuracy, averaged over the
    # input and two rotations, is a run of its own; one run without views is refused in one line
    one = [*tiny_overrides, "ensemble.members=1"]
    bare = CliRunner().invoke(app, ["ensemble", *[a for o in one for a in ("--set", o)]])
    assert bare.exit_code != 0 and "averages nothing without ensemble.views" in bare.output
    assert "Traceback" not in bare.output
    views = [*one, "ensemble.views=[[0, 0, 6], [0, 0, -6]]"]
    tta = CliRunner().invoke(app, ["ensemble", *[a for o in views for a in ("--set", o)]])
    assert tta.exit_code == 0, tta.output
    [run] = [r for r in reading.search_runs([params.ensemble.experiment]) if r.run_id != ens.run_id]
    [best] = pick_members(load_params(overrides=views))
    assert run.tags["members"] == best.run_id and run.params["n_views"] == "3" and run.name == "ensemble-1x3views"
    assert {"test_accuracy", "val_accuracy", "inference_ms_per_image"} <= set(run.metrics)
    info, created = select.register_run(run.run_id, params)
    assert created and float(info.tags["onnx_parity_max_abs_diff"]) <= 1e-4
