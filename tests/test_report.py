"""The generated experiments report: every number in it equals the value stored in the tracking store."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cnn_ocr import report
from cnn_ocr.cli import app
from cnn_ocr.config import load_params

NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


@pytest.fixture(scope="module")
def populated_store(tmp_path_factory, tiny_overrides):
    """Three trained families, a two-trial tuning study with its final run, and a production model."""
    from cnn_ocr import select, tune
    from cnn_ocr.train import train_model

    tmp = tmp_path_factory.mktemp("report-store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("OCR_MLFLOW_ARTIFACT_ROOT", str(tmp / "artifacts"))
        params = load_params(overrides=tiny_overrides + [
            "tune.fixed.improved_cnn={epochs: 1}", "tune.startup_trials=1", "tune.enqueue_defaults=false",
            f"tune.best_params_file={tmp / 'best.yaml'}"])
        for family in ("base_cnn", "svm", "improved_cnn"):
            train_model(family, params)
        tune.run_tuning("improved_cnn", params, trials=2, timeout_s=None, storage=f"sqlite:///{tmp / 'optuna.db'}",
                        study_name="report-study", final=True)
        select.select_production(params)
        _log_recipe_result(tmp / "recipes.json")
        yield uri, params


def _log_recipe_result(path: Path) -> None:
    """A recipe benchmark result (two recipes, two seeds; constructed figures) logged as the benchmark logs it."""
    import json

    from benchmarks.recipes import log_to_store

    def runs(val: list[float], refused: float | None = None) -> dict:
        shares = {} if refused is None else {"refusals": {
            "mnist_test_refused": 0.01, "refused_val_negatives": refused, "refused_fashion": refused - 0.01,
            "refused_handwriting": refused - 0.02, "refused_pictograms": refused - 0.03}, "refusals_detector": "msp"}
        return {"runs": [{"seed": seed, "val_accuracy": v, "test_accuracy": v - 0.001, "train_time_s": 50.0 + seed,
                          **shares} for seed, v in zip((1, 2), val, strict=True)]}

    # runs measured before the not-a-digit figures (previous) have none
    path.write_text(json.dumps({"date": "2026-12-01T05:00:00+00:00", "git_commit": "abc", "figures": {
        "recipes": {"previous": runs([0.9940, 0.9950]), "ema": runs([0.9952, 0.9958], refused=0.99)},
        "recipe_overrides": {"previous": ["models.improved_cnn.ema_decay=null"],
                             "ema": ["models.improved_cnn.ema_decay=0.999"]}}}))
    assert log_to_store(path) == 4 and log_to_store(path) == 0  # logged once


@pytest.fixture()
def store(populated_store, monkeypatch):
    uri, params = populated_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri, params


def _stored(client: MlflowClient, source: report.Source):
    if source.kind == "version_tag":
        name, version = source.ref.rsplit(":", 1)
        return client.get_model_version(name, version).tags[source.key]
    run = client.get_run(source.ref)
    if source.kind == "start":
        return run.info.start_time
    return {"metric": run.data.metrics, "param": run.data.params, "tag": run.data.tags}[source.kind][source.key]


def _prose_numbers(markdown: str) -> Counter:
    """Numbers a reader sees as data: code blocks/spans (ids, commands), link targets, headings' experiment
    numbers and list markers are structure, not data."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"Experiment \d+", "Experiment", text)
    text = re.sub(r"(?m)^\s*\d+\. ", "", text)
    return Counter(NUMBER.findall(text))


def test_every_number_in_the_report_equals_the_stored_value(store, tmp_path):
    uri, params = store
    doc = report.build_report(params, tmp_path / "figures")
    markdown = "\n".join(doc.lines)
    client = MlflowClient(uri)
    assert len(doc.values) > 80
    for value in doc.values:
        stored = tuple(_stored(client, s) for s in value.sources)
        assert stored == value.raw, value
        assert report.FORMATS[value.fmt](*stored) == value.text, value
    written = Counter(n for v in doc.values for n in NUMBER.findall(v.text))
    unexplained = _prose_numbers(markdown) - written
    assert not unexplained, f"numbers in the report with no stored source: {dict(unexplained)}"

    prod = client.get_model_version_by_alias(params.select.registered_model, "production")
    val = report.FORMATS["pct"](client.get_run(prod.run_id).data.metrics["val_accuracy"])
    acc = report.FORMATS["pct"](prod.tags["test_accuracy"])
    ood = markdown.split("### Not-a-digit detection")[1].split("##")[0]
    # the section's first row is the base CNN's, with the figures of the detector that ships (its run's tag)
    source = next(v.sources[0] for v in doc.values if re.fullmatch(r"ood_\w+_refused_val_negatives", v.sources[0].key))
    base_run = client.get_run(source.ref)
    detector = base_run.data.tags["ood_detector"]
    assert detector == params.ood.detector or params.ood.detector == "auto"
    assert source.key == f"ood_{detector}_refused_val_negatives"
    refused = report.FORMATS["pct"](base_run.data.metrics[source.key])
    assert f"| Base CNN | True | {detector} |" in ood and f"| {refused} |" in ood
    recipes = markdown.split("### Training recipes")[1].split("##")[0]
    assert ("| ema | `models.improved_cnn.ema_decay=0.999` | 1, 2 | 99.55% | 99.45% | +0.10 | +0.10 | "
            "msp: 1.00% / 99.00% / 98.00% / 97.00% / 96.00% |") in recipes
    assert "| previous | `models.improved_cnn.ema_decay=null` | 1, 2 | 99.45% | 99.35% |  |  |  |" in recipes
    production_section = markdown.split("## Production Model Selection")[1]
    assert f"Validation accuracy {val} (test accuracy, reported: {acc})" in production_section
    assert "highest validation accuracy" in production_section and prod.run_id in production_section
    for heading in ("## Experiment Overview", "### Experiment 1: Baseline Models", "### Experiment 2: Improved CNN",
                    "### Experiment 3: Hyperparameter Tuning", "## Production Model Selection", "## MLflow Workflow"):
        assert heading in markdown


def test_report_figures_are_real_images_next_to_the_file(store, tmp_path):
    uri, params = store
    out = tmp_path / "ml" / "README_experiments.md"
    result = CliRunner().invoke(app, ["report", "--out", str(out), "--set", f"data.processed_dir={params.data.processed_dir}"])
    assert result.exit_code == 0, result.output
    markdown = out.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(images) >= 10  # learning curve + confusion matrix per model, two tuning plots
    for rel in images:
        assert (out.parent / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.write_report(params, out)
    assert out.read_text() == markdown  # regenerating gives the same file: nothing in it but stored values


def test_empty_store_gives_a_report_that_says_what_to_run(tracking_uri, tmp_path):
    path, n_runs = report.write_report(load_params(), tmp_path / "README_experiments.md")
    text = Path(path).read_text()
    assert n_runs == 0 and "`ocr train --model base_cnn`" in text and "`ocr select`" in text and "`ocr tune`" in text
    assert not _prose_numbers(text)


def test_one_section_is_regenerated_in_place_and_the_rest_is_untouched(store, tmp_path):
    _, params = store
    out = tmp_path / "README_experiments.md"
    report.write_report(params, out)
    before = out.read_text().splitlines()
    heading = "### Training recipes (the same seeds, side by side)"
    start = before.index(heading)
    end = next(i for i in range(start + 1, len(before)) if before[i].startswith("#"))
    # the section as an older report had it, before the benchmark's runs were in the store
    stale = [*before[:start], heading, "", "_No recipe runs yet: `python -m benchmarks recipes`._", "", *before[end:]]
    out.write_text("\n".join(stale) + "\n")
    result = CliRunner().invoke(app, ["report", "--section", "recipes", "--out", str(out)])
    assert result.exit_code == 0, result.output
    after = out.read_text().splitlines()
    assert after[:start] == before[:start]  # everything above untouched
    assert after[start:end] == before[start:end]  # the section exactly as a whole regeneration writes it
    assert after[end].startswith("_This section alone was regenerated by `ocr report --section` from")
    assert after[end + 2:] == before[end:]  # everything below untouched


@pytest.mark.parametrize(("args", "says"), [(["--section", "tuning"], "no standalone report section 'tuning'"),
                                             (["--section", "recipes"], "does not exist; run `ocr report` first")])
def test_a_section_that_cannot_be_regenerated_is_one_line(tracking_uri, tmp_path, args, says):
    result = CliRunner().invoke(app, ["report", *args, "--out", str(tmp_path / "missing.md")])
    assert result.exit_code == 1 and says in result.output and "Traceback" not in result.output
