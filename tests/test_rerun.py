"""Re-running a recorded run (`cnn_ocr.rerun`): what resume and reproduce read back, and when they refuse."""

from __future__ import annotations

import shutil
import signal

import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cnn_ocr.cli import app
from cnn_ocr.config import load_params
from cnn_ocr.rerun import RerunError, recorded_data, recorded_run, resume_training

ARRAYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


@pytest.fixture()
def own_data(tiny_overrides, tiny_data_dir, tmp_path, monkeypatch) -> tuple[list[str], object]:
    """Overrides pointing at a private copy of the tiny data (so a test may rebuild it), checkpoints in tmp."""
    monkeypatch.setenv("OCR_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    data_dir = tmp_path / "processed"
    shutil.copytree(tiny_data_dir, data_dir)
    overrides = [o for o in tiny_overrides if not o.startswith("data.processed_dir=")]
    return [*overrides, f"data.processed_dir={data_dir}"], data_dir


def _train(family: str, overrides: list[str]):
    from cnn_ocr.train import train_model

    return train_model(family, load_params(overrides=overrides))


def test_a_recorded_run_comes_back_with_its_family_params_and_data(tracking_uri, own_data):
    overrides, _ = own_data
    result = _train("base_cnn", [*overrides, "models.base_cnn.dense_units=40"])
    rec = recorded_run(result.run_id)
    assert rec.family == "base_cnn" and rec.run.status == "FINISHED" and rec.run.experiment == "baseline-models"
    assert rec.params.models.base_cnn.dense_units == 40
    splits = recorded_data(rec)
    assert splits.version.content_hash == rec.run.tags["data_content_hash"] and len(splits.train_y) == 600


def test_resume_refuses_finished_svm_and_changed_data_runs(tracking_uri, own_data):
    overrides, data_dir = own_data
    client = MlflowClient(tracking_uri)
    cnn = _train("base_cnn", overrides)
    with pytest.raises(RerunError, match="already FINISHED; there is nothing to resume"):
        resume_training(cnn.run_id)

    svm = _train("svm", overrides)
    client.set_terminated(svm.run_id, "KILLED")
    with pytest.raises(RerunError, match="trained 'svm'; only the CNN families can be resumed"):
        resume_training(svm.run_id)

    client.set_terminated(cnn.run_id, "KILLED")  # as if stopped after its (only) epoch's checkpoint
    arrays = {k: np.load(data_dir / "v2.0" / f"{k}.npy") for k in ARRAYS}
    arrays["train_y"] = np.roll(arrays["train_y"], 1)
    from cnn_ocr.data.prepare import write_version

    write_version(data_dir / "v2.0", arrays, {"name": "v2.0", "description": "rebuilt", "dataset": "mnist"})
    exp_id = client.get_run(cnn.run_id).info.experiment_id
    before = len(client.search_runs([exp_id]))
    with pytest.raises(RerunError, match=f"does not match run {cnn.run_id}.*dvc checkout {data_dir / 'v2.0'}"):
        resume_training(cnn.run_id)
    assert len(client.search_runs([exp_id])) == before  # refused before any run was created


def test_resuming_an_unknown_run_is_a_one_line_error(tracking_uri):
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:  # `ocr train` installs its own SIGINT / SIGTERM handlers: give pytest its own back
        result = CliRunner().invoke(app, ["train", "--resume", "feedfacefeedfacefeedfacefeedface"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert result.exit_code == 1 and "no run 'feedfacefeedfacefeedfacefeedface'" in result.output
    assert "Traceback" not in result.output and "marked FAILED" not in result.output
