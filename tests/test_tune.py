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

from cnn_ocr import tune, tuning_rules
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
        "tune.warmup_epochs=0", "tune.pruner=median", f"tune.best_params_file={tmp_path / 'best.yaml'}"])
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


def _record(run_id, family="base_cnn", val=0.9, params=None, **tags):
    from cnn_ocr.tracking.reading import RunRecord

    return RunRecord(run_id, "baseline-models", run_id, "FINISHED", 0, params or {}, {"val_accuracy": val},
                     {"family": family, **tags})


def test_the_verdict_is_judged_on_validation_against_the_default_run():
    default = _record("d", val=0.990)
    better = tuning_rules.judge(default, {"val_accuracy": 0.992, "test_accuracy": 0.1}, defaults_won_study=False)
    assert (better.outcome, better.default_run_id, better.val_gain_pp) == ("tuned", "d", 0.2)
    worse = tuning_rules.judge(default, {"val_accuracy": 0.989, "test_accuracy": 1.0}, defaults_won_study=False)
    assert worse.outcome == "defaults" and worse.val_gain_pp == -0.1  # a better test accuracy changes nothing
    tie = tuning_rules.judge(default, {"val_accuracy": 0.990}, defaults_won_study=False)
    assert tie.outcome == "defaults"  # the tuned params must gain to replace the defaults
    won = tuning_rules.judge(default, None, defaults_won_study=True)
    assert (won.outcome, won.val_gain_pp) == ("defaults", 0.0)
    assert tuning_rules.judge(None, {"val_accuracy": 0.9}, defaults_won_study=False).outcome == "tuned"
    assert tuning_rules.judge(None, {"val_accuracy": 0.9}, defaults_won_study=True).outcome == "defaults"


def test_the_defaults_win_a_study_whose_best_trial_gains_no_more_than_min_trial_gain():
    assert tuning_rules.trial_gain_pp(0.9854, 0.9880) == pytest.approx(-0.26)
    assert tuning_rules.trial_gain_pp(0.9880, None) is None  # trial 0 pruned: its value is not comparable
    assert tuning_rules.defaults_won(True, None, 0.0)
    assert tuning_rules.defaults_won(False, 0.26, 0.3) and tuning_rules.defaults_won(False, 0.3, 0.3)
    assert not tuning_rules.defaults_won(False, 0.31, 0.3)
    assert not tuning_rules.defaults_won(False, None, 0.3)  # beaten at a smaller budget: the best params go on
    assert tuning_rules.defaults_won(False, 0.0, 0.0) and not tuning_rules.defaults_won(False, 0.02, 0.0)


def test_a_best_trial_within_min_trial_gain_of_the_defaults_is_not_retrained(tracking_uri, tiny_overrides, tmp_path):
    from cnn_ocr.train import train_model

    # defaults that learn nothing in one epoch, against a space that holds a learning rate that does
    sets = [*tiny_overrides, "models.base_cnn.lr=0.000001", "tune.space.base_cnn={lr: {choices: [0.000001, 0.003]}}",
            "tune.pruner=median", "tune.startup_trials=10", f"tune.best_params_file={tmp_path / 'best.yaml'}"]
    params = load_params(overrides=[*sets, "tune.min_trial_gain=100"])
    default = train_model("base_cnn", params)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    res = tune.run_tuning("base_cnn", params, trials=3, timeout_s=None, storage=storage, study_name="g", final=True)

    study = optuna.load_study(study_name="g", storage=storage)
    first, best = study.trials[0], study.best_trial
    assert first.user_attrs["defaults"] is True and best.number != 0  # a trial beat the defaults
    gain = (best.value - first.value) * 100
    assert 0 < gain <= 100
    assert res.final_run_id is None  # within the bar: no training at full settings
    assert (res.versus_defaults.outcome, res.versus_defaults.default_run_id) == ("defaults", default.run_id)
    parent = MlflowClient(tracking_uri).get_run(res.parent_run_id)
    assert parent.data.metrics["trial_gain_pp"] == pytest.approx(gain, abs=1e-4)
    assert parent.data.params["min_trial_gain"] == "100.0"
    best_file = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best_file["params"] == {"models": {"base_cnn": {"lr": 1e-6}}}

    # the same study judged with a bar below its gain trains the best params at full settings
    res = tune.run_tuning("base_cnn", load_params(overrides=[*sets, "tune.min_trial_gain=0.0"]), trials=0,
                          timeout_s=None, storage=storage, study_name="g", final=True)
    assert res.final_run_id is not None and res.versus_defaults.final_val_accuracy is not None


def test_the_default_run_is_the_newest_run_with_the_configured_params():
    params = load_params()
    flat = {k: tuning_rules.as_logged(v) for k, v in
            __import__("cnn_ocr.config", fromlist=["flatten"]).flatten(params.models.base_cnn).items()}
    runs = [_record("trial", params=flat, **{"tune.role": "trial"}), _record("other-lr", params={**flat, "lr": "0.1"}),
            _record("svm", family="svm", params=flat), _record("rerun", params=flat, reproduces="x"),
            _record("default-new", params=flat), _record("default-old", params=flat)]
    assert tuning_rules.find_default_run("base_cnn", params, runs).run_id == "default-new"
    assert tuning_rules.find_default_run("base_cnn", params, runs[:4]) is None


def test_defaults_outside_the_search_space_are_refused(tiny_overrides):
    params = load_params(overrides=[*tiny_overrides, "tune.space.base_cnn={lr: {low: 0.01, high: 0.1, log: true}}"])
    with pytest.raises(tune.TuningError, match=rf"lr={params.models.base_cnn.lr}.*enqueue_defaults"):
        tune.checked_defaults(params, "base_cnn")
    space = {"a": SearchDim(low=1, high=3), "b": SearchDim(choices=[64, 128])}
    assert tuning_rules.outside_space({"a": 2, "b": 64}, space) == []
    assert tuning_rules.outside_space({"a": "scale", "b": 32}, space) == ["a=scale", "b=32"]


def test_trial_zero_runs_the_defaults_and_tuning_never_ends_below_them(tracking_uri, tiny_splits, tiny_overrides,
                                                                       tmp_path):
    from cnn_ocr.train import train_model

    sets = [*tiny_overrides, "tune.fixed.base_cnn={epochs: 3}", "tune.min_epochs=1", "tune.reduction_factor=2",
            f"tune.best_params_file={tmp_path / 'best.yaml'}",
            # a deliberately crippled final training: whatever the study finds, it must lose to the default run
            "tune.final_fixed={base_cnn: {max_train_samples: 10}}"]
    params = load_params(overrides=sets)
    default = train_model("base_cnn", params)  # the stage before tuning: the default run, at full settings
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    res = tune.run_tuning("base_cnn", params, trials=3, timeout_s=None, storage=storage, study_name="h", final=True)

    study = optuna.load_study(study_name="h", storage=storage)
    assert isinstance(tune.make_pruner(params.tune, 3), optuna.pruners.HyperbandPruner)
    first = study.trials[0]
    assert first.params == tuning_rules.default_values(params, "base_cnn") and first.user_attrs["defaults"] is True
    verdict = res.versus_defaults
    assert verdict.default_run_id == default.run_id
    assert verdict.default_val_accuracy == pytest.approx(default.metrics["val_accuracy"])
    if verdict.outcome == "defaults" and res.final_run_id is None:
        assert verdict.val_gain_pp == 0.0  # the defaults won the study: no final training needed
    else:
        assert verdict.outcome == "defaults" and verdict.val_gain_pp < 0  # the crippled final lost on validation
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["params"] == {"models": {"base_cnn": tuning_rules.default_values(params, "base_cnn")}}
    assert best["versus_defaults"]["outcome"] == "defaults" and best["fidelity"]["epochs"] == 3
    parent = MlflowClient(tracking_uri).get_run(res.parent_run_id)
    assert parent.data.tags["tune.outcome"] == "defaults" and parent.data.params["pruner"] == "hyperband"
