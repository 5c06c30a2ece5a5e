"""The benchmark suite in smoke mode (tiny sizes): every benchmark runs and writes a well-formed result."""

from __future__ import annotations

import json
import logging
import math
import re

import pytest

from benchmarks import __main__ as bench_cli
from benchmarks import readme_table
from benchmarks.common import percentile, summarize, target
from benchmarks.recipes import PRODUCTION, RECIPES, production_recipe, recipe_overrides
from benchmarks.step import VARIANTS as STEP_VARIANTS
from benchmarks.training import REFUSALS
from benchmarks.tta import VIEWS
from cnn_ocr.config import load_params
from cnn_ocr.ood.scores import DETECTORS

pytestmark = pytest.mark.slow
TOP_KEYS = {"schema_version", "benchmark", "mode", "machine", "cpu_model", "cores", "device", "libraries", "date",
            "git_commit", "git_dirty", "settings", "figures", "targets"}


def _check_stat(stat: dict) -> None:
    assert set(stat) >= {"median", "min", "max", "n", "values"}
    assert stat["n"] == len(stat["values"]) >= 1
    assert stat["min"] <= stat["median"] <= stat["max"]


def _load(path) -> dict:
    data = json.loads(path.read_text())
    assert TOP_KEYS <= set(data), TOP_KEYS - set(data)
    assert data["mode"] == "smoke" and data["cores"] >= 1 and data["cpu_model"]
    assert {"torch", "onnxruntime", "numpy", "python"} <= set(data["libraries"])
    for t in data["targets"]:
        assert {"name", "value", "limit", "unit", "direction", "met"} <= set(t)
        assert isinstance(t["met"], bool)
    return data


def test_statistics_helpers():
    s = summarize([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert percentile(range(101), 99) == 99 and percentile([5.0], 50) == 5.0
    assert target("x", 1.0, 2.0, "ms", higher_is_better=False)["met"]
    assert not target("x", None, 2.0, "ms", higher_is_better=False)["met"]
    assert not target("x", 1.0, 2.0, "%", higher_is_better=True)["met"]


@pytest.mark.timeout(420)
def test_training_benchmark_smoke(mnist_splits, tmp_path):
    assert bench_cli.main(["training", "--smoke", "--out", str(tmp_path)]) == 0
    fig = _load(tmp_path / "training.json")["figures"]
    assert set(fig["families"]) == {"base_cnn", "svm", "improved_cnn"}
    for family in ("base_cnn", "improved_cnn"):
        f = fig["families"][family]
        for key in ("epoch_time_s", "images_per_s", "test_accuracy", "peak_rss_mb"):
            _check_stat(f[key])
        assert "time_to_0.990_s" in f and 0 < f["test_accuracy"]["median"] <= 1
    assert fig["families"]["svm"]["choices"]["gamma_used"] > 0
    assert fig["families"]["improved_cnn"]["test_accuracy"]["n"] == 2 and fig["ensemble"]["members"] == 2
    _check_stat(fig["profiles"]["fast"]["wall_s"])


def test_the_production_recipe_is_what_params_yaml_trains_and_older_recipes_keep_their_schedule():
    assert production_recipe(list(RECIPES)) == PRODUCTION
    shipped = load_params().models.improved_cnn.epochs
    # the recipes measured before params.yaml's schedule moved keep theirs (their held figures stay what they were)
    assert load_params(overrides=recipe_overrides("outlier_exposure_full_schedule", [])).models.improved_cnn.epochs == 20
    assert load_params(overrides=recipe_overrides(PRODUCTION, ["models.improved_cnn.epochs=2"])
                       ).models.improved_cnn.epochs == 2 != shipped  # a run's own overrides come last


@pytest.mark.timeout(600)  # 130 s alone on an idle machine; every recipe trains twice, and once more on resume
def test_recipes_benchmark_smoke_keeps_the_recipe_best_on_validation_and_resumes(mnist_splits, tmp_path, caplog):
    assert bench_cli.main(["recipes", "--smoke", "--out", str(tmp_path)]) == 0
    data = _load(tmp_path / "recipes.json")
    fig = data["figures"]
    assert list(fig["recipes"]) == list(RECIPES) and len(RECIPES) >= 8  # every recipe, production and bf16 included
    for name, recipe in fig["recipes"].items():
        assert recipe["test_accuracy"]["n"] == 2 and [r["seed"] for r in recipe["runs"]] == [0, 1]
        # only the outlier-exposure recipe trains with negatives, generated into the smoke run's own data folder
        assert all((r["negatives_used"] > 0) == name.startswith("outlier_exposure") for r in recipe["runs"])
        _check_stat(recipe["val_accuracy"])
        # every run's not-a-digit figures: the shipped detector on the test digits, validation negatives, held-out families
        assert all(set(r["refusals"]) == set(REFUSALS) and r["refusals_detector"] in DETECTORS for r in recipe["runs"])
        assert set(recipe["refusals_mean"]) == set(REFUSALS) and all(0 <= v <= 1 for v in recipe["refusals_mean"].values())
        assert 0 <= recipe["ensemble_test_accuracy"] <= 1
    assert fig["chosen"] == max(fig["recipes"], key=lambda name: fig["recipes"][name]["val_accuracy_mean"])
    assert fig["production"] == PRODUCTION  # the recipe that changes nothing in params.yaml
    assert "asks for 3" in data["targets"][0]["note"] and not data["targets"][0]["met"]  # two seeds, not three
    # the production recipe has a target row of its own unless validation keeps it anyway
    assert (fig["chosen"] == fig["production"]) != any(t["name"].startswith("production recipe (")
                                                       and "test accuracy" in t["name"] for t in data["targets"])
    gate = next(t for t in data["targets"] if "validation negatives refused" in t["name"])  # the promotion gate's
    assert gate["limit"] == 95.0 and gate["value"] == 100 * fig["recipes"][fig["production"]]["refusals_mean"][
        "refused_val_negatives"]

    # interrupted after the first seed: --resume keeps those runs and trains only the second seed's pair
    full = json.loads(json.dumps(fig))
    for recipe in data["figures"]["recipes"].values():
        recipe["runs"] = recipe["runs"][:1]
    (tmp_path / "recipes.json").write_text(json.dumps(data))
    caplog.set_level(logging.INFO, logger="benchmarks.recipes")
    assert bench_cli.main(["recipes", "--smoke", "--out", str(tmp_path), "--resume"]) == 0
    trained = [m for m in caplog.messages if re.fullmatch(r"recipe benchmark: \w+ seed \d+", m)]
    assert trained == [f"recipe benchmark: {name} seed 1" for name in RECIPES]
    assert (tmp_path / "data" / "negatives-v1").is_dir()
    resumed = _load(tmp_path / "recipes.json")["figures"]
    for name, recipe in resumed["recipes"].items():
        first, second = recipe["runs"]
        assert first["seed"] == 0 and first["resumed_from"] == data["date"] and "resumed_from" not in second
        assert first["val_accuracy"] == full["recipes"][name]["runs"][0]["val_accuracy"]
        assert recipe["ensemble_test_accuracy"] == full["recipes"][name]["ensemble_test_accuracy"]  # cached probabilities

    # a recipe added since (here: absent from the result) trains all its seeds; probabilities lost (a fresh
    # checkout): a recipe all of whose runs are resumed keeps its recorded ensemble; with --recipes, only those
    # recipes train (ema's missing seed does not) and the others' runs stay in the result
    caplog.clear()
    (tmp_path / "recipe-probs" / "smoke-previous-seed1.npy").unlink()
    again = _load(tmp_path / "recipes.json")
    del again["figures"]["recipes"]["outlier_exposure"], again["figures"]["recipe_overrides"]["outlier_exposure"]
    again["figures"]["recipes"]["ema"]["runs"] = again["figures"]["recipes"]["ema"]["runs"][:1]
    (tmp_path / "recipes.json").write_text(json.dumps(again))
    assert bench_cli.main(["recipes", "--smoke", "--out", str(tmp_path), "--recipes", "outlier_exposure"]) == 0
    trained = [m for m in caplog.messages if re.fullmatch(r"recipe benchmark: \w+ seed \d+", m)]
    assert trained == ["recipe benchmark: outlier_exposure seed 0", "recipe benchmark: outlier_exposure seed 1"]
    kept = _load(tmp_path / "recipes.json")["figures"]["recipes"]
    assert kept["previous"]["ensemble_test_accuracy"] == full["recipes"]["previous"]["ensemble_test_accuracy"]
    assert [r["seed"] for r in kept["ema"]["runs"]] == [0] and set(kept) == set(full["recipes"])
    restored = _load(tmp_path / "recipes.json")
    restored["figures"]["recipes"]["ema"] = resumed["recipes"]["ema"]  # both seeds again, for what follows
    (tmp_path / "recipes.json").write_text(json.dumps(restored))
    assert bench_cli.main(["recipes", "--smoke", "--out", str(tmp_path), "--figures-only"]) == 0  # their targets
    assert bench_cli.main(["recipes", "--smoke", "--out", str(tmp_path), "--recipes", "nope"]) == 1  # one line, no trace

    # nothing left to train: --resume writes the same runs' figures afresh (with this code's targets); with
    # --figures-only, a recipe stopped after one seed stays at one seed
    caplog.clear()
    before = _load(tmp_path / "recipes.json")
    assert bench_cli.main(["recipes", "--smoke", "--out", str(tmp_path), "--resume"]) == 0
    after = _load(tmp_path / "recipes.json")
    assert after["date"] >= before["date"] and after["targets"] == before["targets"]
    assert {n: [r["val_accuracy"] for r in f["runs"]] for n, f in after["figures"]["recipes"].items()} == \
        {n: [r["val_accuracy"] for r in f["runs"]] for n, f in before["figures"]["recipes"].items()}
    after["figures"]["recipes"]["ema"]["runs"] = after["figures"]["recipes"]["ema"]["runs"][:1]
    (tmp_path / "recipes.json").write_text(json.dumps(after))
    assert bench_cli.main(["recipes", "--smoke", "--out", str(tmp_path), "--figures-only"]) == 0
    assert not [m for m in caplog.messages if re.fullmatch(r"recipe benchmark: \w+ seed \d+", m)]
    ema = _load(tmp_path / "recipes.json")["figures"]["recipes"]["ema"]
    first = before["figures"]["recipes"]["ema"]["runs"][0]
    assert ema["val_accuracy"]["n"] == 1 and ema["runs"][0]["val_accuracy"] == first["val_accuracy"]


@pytest.mark.timeout(300)
def test_tta_benchmark_smoke_scores_every_variant_against_the_plain_model(mnist_splits, tmp_path):
    assert bench_cli.main(["tta", "--smoke", "--out", str(tmp_path)]) == 0
    result = _load(tmp_path / "tta.json")
    fig, n_val = result["figures"], result["settings"]["slice"][1]
    assert set(fig["variants"]) == set(VIEWS) and fig["chosen"] in VIEWS
    for name, v in fig["variants"].items():
        assert v["views"] == 1 + len(VIEWS[name]) and v["onnx_parity_max_abs"] < 1e-4
        _check_stat(v["batch1_p50_ms"])
        row = v["per_seed"][0]
        assert 0 <= row["val_accuracy"] <= 1 and 0 <= row["refused_val_negatives"] <= 1
        assert {"refused_fashion", "refused_handwriting", "refused_pictograms"} <= set(row)
    plain = fig["variants"]["plain"]["per_seed"][0]
    assert plain["val_fixed"] == plain["val_broken"] == 0
    for v in fig["variants"].values():  # the paired counts explain the change in validation accuracy
        row = v["per_seed"][0]
        assert row["val_fixed"] - row["val_broken"] == round((row["val_accuracy"] - plain["val_accuracy"]) * n_val)
    ens = fig["ensemble"]  # the seeds' ensemble, plain and with each set of views
    assert ens["members"] == len(fig["seeds"]) == 2 and set(ens["variants"]) == set(VIEWS)
    assert ens["chosen"] in VIEWS and ens["latency_budget_ms"] == load_params().select.latency_budget_ms
    base = ens["variants"]["plain"]
    for name, v in ens["variants"].items():
        assert v["views"] == 1 + len(VIEWS[name]) and v["onnx_parity_max_abs"] < 1e-4
        _check_stat(v["batch1_p50_ms"])
        assert v["val_fixed"] - v["val_broken"] == round((v["val_accuracy"] - base["val_accuracy"]) * n_val)
    assert base["val_fixed"] == base["val_broken"] == 0
    names = [t["name"] for t in result["targets"]]
    assert any(n.startswith("ensemble of the 2 seeds") for n in names), names
    for seed in fig["seeds"]:  # trained once, reused by a rerun
        assert (tmp_path / "production-models" / f"improved_cnn-seed{seed}.pt").is_file()


@pytest.mark.timeout(300)
def test_step_benchmark_smoke_times_every_loop_variant_and_projects_the_stage(mnist_splits, tmp_path):
    assert bench_cli.main(["step", "--smoke", "--out", str(tmp_path)]) == 0
    result = _load(tmp_path / "step.json")
    fig, settings = result["figures"], result["settings"]
    assert set(fig["variants"]) == set(STEP_VARIANTS) and fig["fastest"] in STEP_VARIANTS
    assert fig["steps_per_epoch"] == math.ceil(settings["slice"][0] / fig["batch_size"])  # the sliced split's epoch
    for v in fig["variants"].values():
        _check_stat(v["ms_per_step"])
        assert v["ms_per_step"]["n"] == settings["rounds"]
        assert v["projected_stage_s"] == pytest.approx(v["ms_per_step"]["median"] / 1000 * fig["steps_per_epoch"]
                                                       * fig["epochs"])
    assert fig["variants"]["production"]["speedup_vs_production"] == 1.0
    assert fig["other_stages_s"] is None  # a smoke run never projects the main job from full figures
    names = [t["name"] for t in result["targets"]]
    assert names[0].startswith("improved CNN's training alone"), names
    assert len(names) == 1 + (fig["fastest"] != "production"), names  # a faster option gets its own line


@pytest.mark.timeout(300)
def test_inference_benchmark_smoke(mnist_splits, tmp_path):
    assert bench_cli.main(["inference", "--smoke", "--out", str(tmp_path)]) == 0
    fig = _load(tmp_path / "inference.json")["figures"]
    cnn = fig["models"]["improved_cnn"]
    for backend in ("pytorch", "onnxruntime", "onnxruntime_1_thread", "onnxruntime_int8"):
        _check_stat(cnn[backend]["batch1_p50_ms"])
        _check_stat(cnn[backend]["batch256_images_per_s"])
    assert 0 <= cnn["onnx_int8_test_accuracy"] <= 1 and cnn["speedup_onnxruntime_vs_pytorch_batch1"] > 0
    assert "scikit_learn" in fig["models"]["svm"] and fig["int8_speedup_vs_fp32_batch256"] > 0


@pytest.mark.timeout(300)
def test_service_benchmark_smoke(wrk, mnist_splits, tmp_path):
    assert bench_cli.main(["service", "--smoke", "--out", str(tmp_path)]) == 0
    fig = _load(tmp_path / "service.json")["figures"]
    for workers in ("workers_1", "workers_2"):
        for endpoint in ("predict_png", "read_4_digits"):
            levels = fig["runs"][workers][endpoint]
            assert [lv["concurrency"] for lv in levels] == [1, 4]
            for lv in levels:
                assert lv["errors"] == 0 and lv["requests"] > 0
                _check_stat(lv["p50_ms"])
    cost = fig["detector_cost"]  # the same model served with and without its not-a-digit score
    for name in ("with_detector", "without_detector"):
        assert [lv["concurrency"] for lv in cost[name]] == [1] and cost[name][0]["errors"] == 0
        _check_stat(cost[name][0]["p50_ms"])
    targets = {t["name"]: t for t in _load(tmp_path / "service.json")["targets"]}
    assert "POST /predict p50 at concurrency 1, 1 worker, with the detector" in targets


@pytest.mark.timeout(180)
def test_mainjob_benchmark_smoke(tmp_path):
    assert bench_cli.main(["mainjob", "--smoke", "--out", str(tmp_path)]) == 0
    fig = _load(tmp_path / "mainjob.json")["figures"]
    assert fig["completed"] and set(fig["stages"]) == {"make_numbers", "sum_numbers"}
    _check_stat(fig["total_s"])


def test_readme_block_is_replaced_between_markers(tmp_path):
    result = {"benchmark": "inference", "mode": "full", "date": "2025-01-01T00:00:00+00:00", "git_commit": "a" * 40,
              "git_dirty": False, "cpu_model": "CPU", "cores": 2, "device": "cpu",
              "targets": [target("batch-1 p50", 0.15, 0.2, "ms", False), target("int8", 9000.0, 15000, "img/s", True)]}
    (tmp_path / "inference.json").write_text(json.dumps(result))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Performance\n{readme_table.START}\nold\n{readme_table.END}\nafter\n")
    assert readme_table.refresh(readme, tmp_path)
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{readme_table.END}\nafter\n")
    assert "| inference | batch-1 p50 | 0.15 ms | <= 0.2 ms | met |" in text
    assert "| inference | int8 | 9,000 img/s | >= 15,000 img/s | **not met** |" in text
    assert "| mainjob | whole main job | not measured | <= 30 min | **not met** |" in text
    readme.write_text("no markers\n")
    assert not readme_table.refresh(readme, tmp_path) and readme.read_text() == "no markers\n"
