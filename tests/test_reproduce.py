"""`ocr reproduce`: identical metrics on CPU, a tagged new run, refusal on other data, warning on other code."""

from __future__ import annotations

import shutil

import numpy as np
from mlflow import MlflowClient
from typer.testing import CliRunner

from cnn_ocr.cli import app
from cnn_ocr.config import load_params
from cnn_ocr.reproduce import COMPARED


def _train(overrides: list[str], family: str = "base_cnn"):
    from cnn_ocr.train import train_model

    return train_model(family, load_params(overrides=overrides))


def test_reproduction_has_identical_metrics_and_points_back(tracking_uri, tiny_overrides):
    original = _train(tiny_overrides)
    client = MlflowClient(tracking_uri)
    client.set_tag(original.run_id, "git_commit", "0" * 40)  # as if the run was made at another commit

    result = CliRunner().invoke(app, ["reproduce", original.run_id], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "identical metrics" in result.output
    assert "warning" in result.output and "git checkout 000000000000" in result.output

    old = client.get_run(original.run_id)
    (new,) = client.search_runs([old.info.experiment_id], f"tags.reproduces = '{original.run_id}'")
    assert new.info.status == "FINISHED" and new.info.run_id != original.run_id
    compared = [k for k in COMPARED if k in old.data.metrics]
    assert len(compared) >= 10
    assert {k: new.data.metrics[k] for k in compared} == {k: old.data.metrics[k] for k in compared}
    assert new.data.params == old.data.params


def test_reproduction_refuses_when_the_data_differs(tracking_uri, tiny_overrides, tiny_data_dir, tmp_path):
    from cnn_ocr.data.prepare import write_version

    data_dir = tmp_path / "processed"
    shutil.copytree(tiny_data_dir, data_dir)
    overrides = [o for o in tiny_overrides if not o.startswith("data.processed_dir=")]
    overrides.append(f"data.processed_dir={data_dir}")
    original = _train(overrides)

    arrays = {k: np.load(data_dir / "v2.0" / f"{k}.npy") for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    arrays["train_y"] = np.roll(arrays["train_y"], 1)  # someone rebuilt the data differently
    write_version(data_dir / "v2.0", arrays, {"name": "v2.0", "description": "rebuilt", "dataset": "mnist"})

    client = MlflowClient(tracking_uri)
    exp_id = client.get_run(original.run_id).info.experiment_id
    before = len(client.search_runs([exp_id]))
    result = CliRunner().invoke(app, ["reproduce", original.run_id])
    assert result.exit_code == 1
    assert "does not match run" in result.output and f"dvc checkout {data_dir / 'v2.0'}" in result.output
    assert "Traceback" not in result.output
    assert len(client.search_runs([exp_id])) == before  # refused before any run was created

    shutil.rmtree(data_dir / "v2.0")
    result = CliRunner().invoke(app, ["reproduce", original.run_id])
    assert result.exit_code == 1 and "dvc checkout" in result.output


def test_unknown_run_is_a_one_line_error(tracking_uri):
    result = CliRunner().invoke(app, ["reproduce", "feedfacefeedfacefeedfacefeedface"])
    assert result.exit_code == 1 and "no run 'feedfacefeedfacefeedfacefeedface'" in result.output
    assert "Traceback" not in result.output
