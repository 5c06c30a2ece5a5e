"""Tuning: search space, seeded sampling, pruning, MLflow parent/trial runs, and two workers on one study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from cnn_ocr import tune
from cnn_ocr.config import ConfigError, SearchDim, load_params

SPACE = {"lr": SearchDim(low=3e-4, high=1e-3, log=True), "conv_dropout": SearchDim(low=0.25, high=0.30),
         "batch_size": SearchDim(choices=[64, 128]), "patience": SearchDim(low=2, high=5, integer=True)}


def _proposals(seed: int, n: int) -> list[dict]:
    study = optuna.create_study(direction="maximize", sampler=tune._sampler(seed, startup_trials=3))
    study.optimize(lambda t: float(sum(hash(str(v)) % 7 for v in tune.suggest(t, SPACE).values())), n_trials=n)
    return [t.params for t in study.trials]


def test_search_space_and_seeded_sampling():
    runs = _proposals(42, 8)
    assert runs == _proposals(42, 8)  # seeded: the same study twice proposes the same values
    assert runs != _proposals(43, 8)
    assert len({tuple(sorted(p.items())) for p in runs}) == 8  # no trial repeats another
    for p in runs:
        assert 3e-4 <= p["lr"] <= 1e-3 and 0.25 <= p["conv_dropout"] <= 0.30
        assert p["batch_size"] in (64, 128) and isinstance(p["patience"], int) and 2 <= p["patience"] <= 5


def test_default_space_covers_the_documented_ranges():
    space = load_params().tune.space
    lr, drop = space["improved_cnn"]["lr"], space["improved_cnn"]["conv_dropout"]
    assert (lr.low, lr.high, lr.log) == (0.0003, 0.001, True) and (drop.low, drop.high) == (0.25, 0.30)
    assert {"C", "gamma"} <= set(space["svm"]) and space["base_cnn"]


def test_bad_tuning_params_are_rejected():
    with pytest.raises(ConfigError, match="not in models.svm"):
        load_params(overrides=["tune.space.svm={Cee: {low: 1, high: 2}}"])
    with pytest.raises(ConfigError, match="low < high"):
        load_params(overrides=["tune.space.svm={C: {low: 2, high: 1}}"])
    with pytest.raises(ConfigError, match="models.svm"):
        tune.with_family_values(load_params(), "svm", {"C": -1.0})
    assert tune.redact("postgresql://optuna:s3cret@db.example:5432/optuna") == "postgresql://optuna:***@db.example:5432/optuna"
    assert tune.redact("sqlite:///x/optuna.db") == "sqlite:///x/optuna.db"


def _trial_runs(client: MlflowClient, study: str) -> list:
    exp = client.get_experiment_by_name("hyperparameter-tuning")
    return client.search_runs([exp.experiment_id], f"tags.`optuna.study` = '{study}' and tags.`tune.role` = 'trial'")


def test_tuning_run_tracks_every_trial_marks_pruned_and_writes_best_params(tracking_uri, tiny_overrides, tmp_path):
    params = load_params(overrides=tiny_overrides + [
        "tune.fixed.base_cnn={epochs: 2}", "tune.final_fixed={base_cnn: {batch_size: 64}}", "tune.startup_trials=1",
        "tune.warmup_epochs=0", f"tune.best_params_file={tmp_path / 'best.yaml'}"])
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    res = tune.run_tuning("base_cnn", params, trials=4, timeout_s=None, storage=storage, study_name="s", final=True)

    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == 4 and res.counts["complete"] + res.counts["pruned"] == 4
    assert res.counts["pruned"] >= 1  # the median pruner stopped at least one weak trial
    client = MlflowClient(tracking_uri)
    runs = {int(r.data.tags["optuna.trial"]): r for r in _trial_runs(client, "s")}
    assert sorted(runs) == [0, 1, 2, 3]
    for t in study.trials:
        run = runs[t.number]
        assert run.data.tags["mlflow.parentRunId"] == res.parent_run_id
        if t.state == optuna.trial.TrialState.PRUNED:
            assert run.info.status == "KILLED" and run.data.tags["pruned"] == "true"
        else:
            assert run.info.status == "FINISHED" and t.user_attrs["mlflow_run_id"] == run.info.run_id
            assert run.data.metrics["val_accuracy"] == t.value
        for key, value in t.params.items():  # the trial's values are the run's params
            assert float(run.data.params[key]) == pytest.approx(float(value))

    parent = client.get_run(res.parent_run_id)
    assert parent.data.tags["tune.role"] == "parent" and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_accuracy"] == study.best_value
    assert {f"best.{k}" for k in study.best_params} <= set(parent.data.params)
    plots = {a.path for a in client.list_artifacts(res.parent_run_id, "plots")}
    assert plots == {"plots/optimization_history.png", "plots/parallel_coordinate.png"}
    final = client.get_run(res.final_run_id)
    assert final.data.tags["tune.role"] == "final" and final.data.tags["mlflow.parentRunId"] == res.parent_run_id
    assert float(final.data.params["lr"]) == pytest.approx(study.best_params["lr"])
    assert final.data.params["epochs"] == "1"  # the trial-only settings are not used for the final training
    assert final.data.params["batch_size"] == "64" and runs[0].data.params["batch_size"] == "128"  # final_fixed

    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["params"] == {"models": {"base_cnn": study.best_params}}
    assert best["best_value"] == study.best_value and best["final_run_id"] == res.final_run_id
    assert all(s.startswith("models.base_cnn.") for s in best["set"])
    load_params(overrides=best["set"])  # the written overrides are valid params


def test_two_workers_share_one_study(tracking_uri, tiny_overrides, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sets = [*tiny_overrides, "tune.fixed.base_cnn={epochs: 1}", f"tune.best_params_file={tmp_path / 'best.yaml'}"]
    cmd = [str(Path(sys.executable).with_name("ocr")), "tune", "--model", "base_cnn", "--trials", "2", "--no-final",
           "--study", "shared", "--storage", storage, *sum((["--set", s] for s in sets), [])]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    workers = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # 2 workers x 2 trials, none lost or doubled
    assert all(t.state.is_finished() for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # no duplicated proposals
    client = MlflowClient(tracking_uri)
    runs = _trial_runs(client, "shared")
    assert sorted(int(r.data.tags["optuna.trial"]) for r in runs) == [0, 1, 2, 3]  # exactly one run per trial
    exp = client.get_experiment_by_name("hyperparameter-tuning")
    parents = client.search_runs([exp.experiment_id], "tags.`tune.role` = 'parent'")
    assert len(parents) == 2 and len({p.data.tags["tune.worker"] for p in parents}) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} <= {p.info.run_id for p in parents}
    assert all(p.info.status == "FINISHED" for p in parents)
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["study"] == "shared"

    # after the workers: a summary-only pass (no trials) reports the study-wide best
    params = load_params(overrides=sets)
    summary = tune.run_tuning("base_cnn", params, trials=0, timeout_s=None, storage=storage, study_name="shared",
                              final=False)
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    assert summary.counts["complete"] + summary.counts["pruned"] == 4 and summary.best_trial == best.number
    assert len(_trial_runs(client, "shared")) == 4  # no new trial runs
