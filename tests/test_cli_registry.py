"""The registry's command-line success paths, through `ocr` alone, on one fresh tracking store:
`train --model improved_cnn`, `register --run-id`, `models promote`, `rollback --to N`, `export --version` and
`--run-id`, and `reproduce` exiting 3 when the recorded metrics do not come out again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow


def ocr(*args: str) -> tuple[int, str]:
    """Run `ocr ARGS` in process; (exit code, everything printed)."""
    from cnn_ocr.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_overrides):
    """A tracking store of its own (env for every `ocr` call of this module) and the `--set` arguments."""
    folder = tmp_path_factory.mktemp("registry-cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        mp.setenv("OCR_MLFLOW_ARTIFACT_ROOT", str(folder / "artifacts"))
        mp.setenv("OCR_CHECKPOINT_DIR", str(folder / "ckpt"))
        yield folder, [a for o in tiny_overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def runs(store) -> dict[str, str]:
    """`ocr train` of the base and the improved CNN (one short epoch each); family -> run id."""
    folder, sets = store
    ids = {}
    for family in ("base_cnn", "improved_cnn"):
        out = folder / f"{family}.json"
        code, said = ocr("train", "--model", family, *sets, "--metrics-out", str(out))
        assert code == 0, said
        assert 0.0 <= json.loads(out.read_text())["test_accuracy"] <= 1.0
        ids[family] = _run_id_of(family)
    return ids


def _run_id_of(family: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.family = '{family}'", order_by=["attributes.start_time DESC"])
    assert runs, f"no {family} run"
    return runs[0].info.run_id


def _spec(folder: Path) -> dict:
    return json.loads((folder / "spec.json").read_text())


def _logits(folder: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    x = (images.astype(np.float32) / 255.0)[:, None]
    session = ort.InferenceSession(str(folder / "model.onnx"))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_train_improved_cnn_on_a_tiny_slice(runs):
    from mlflow import MlflowClient

    run = MlflowClient().get_run(runs["improved_cnn"])
    assert run.info.status == "FINISHED" and run.data.tags["family"] == "improved_cnn"
    assert run.data.params["epochs"] == "1" and run.data.params["train_samples"] == "600"


def test_register_promote_rollback_and_export(runs, store, tiny_splits):
    folder, sets = store
    code, said = ocr("register", "--run-id", runs["base_cnn"], *sets)
    assert code == 0 and "registered as OCR-Production-Model v1" in said, said
    code, said = ocr("register", "--run-id", runs["improved_cnn"], *sets)
    assert code == 0 and "registered as OCR-Production-Model v2" in said, said
    code, said = ocr("register", "--run-id", runs["improved_cnn"], *sets)
    assert code == 0 and "already registered as OCR-Production-Model v2" in said, said

    code, said = ocr("models", "promote", "1", *sets)
    assert code == 0 and "v1 -> production" in said, said
    code, said = ocr("models", "promote", "2", "--force", *sets)
    assert code == 0 and "v2 -> production" in said, said
    assert _production(folder / "prod-a", sets)["version"] == "2"

    code, said = ocr("rollback", "--to", "1", "--reason", "v2 misreads sevens", *sets)
    assert code == 0 and "production v2 -> v1 (v2 misreads sevens)" in said, said
    assert _production(folder / "prod-b", sets)["version"] == "1"
    code, said = ocr("models", "history")
    assert code == 0 and "rollback" in said and "v2 misreads sevens" in said, said

    code, said = ocr("export", "--version", "2", "--out", str(folder / "v2"), *sets)
    assert code == 0 and "OCR-Production-Model v2" in said, said
    assert _spec(folder / "v2")["model"]["run_id"] == runs["improved_cnn"]
    code, said = ocr("export", "--run-id", runs["improved_cnn"], "--out", str(folder / "run"), *sets)
    assert code == 0 and f"run {runs['improved_cnn']}" in said and "parity" in said, said
    assert _spec(folder / "run")["model"]["run_id"] == runs["improved_cnn"]
    images = tiny_splits.test_x[:100]
    by_version, by_run = _logits(folder / "v2", images), _logits(folder / "run", images)
    assert by_version.shape == (100, 10)
    np.testing.assert_allclose(by_run, by_version, atol=1e-4)  # the same run's model, exported twice


def _production(dest: Path, sets: list[str]) -> dict:
    """The spec's model block of the version `production` points at (exported by alias)."""
    code, said = ocr("export", "--alias", "production", "--out", str(dest), *sets)
    assert code == 0, said
    return {k: str(v) for k, v in _spec(dest)["model"].items()}


def test_reproduce_exits_3_when_the_metrics_differ(runs):
    """The stored run claims a test accuracy its recorded params, seed and data do not give again."""
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id = runs["base_cnn"]
    claimed = client.get_run(run_id).data.metrics["test_accuracy"] + 0.25
    last_step = max(m.step for m in client.get_metric_history(run_id, "test_accuracy"))
    client.log_metric(run_id, "test_accuracy", claimed, step=last_step + 1)  # the run's figure from now on
    code, said = ocr("reproduce", run_id)
    errors = [line for line in said.splitlines() if line.startswith("error")]
    assert code == 3, said
    assert errors == ["error: the reproduction's metrics differ from the original run's"], said
    assert "NO" in said and "Traceback" not in said
    [new] = client.search_runs([client.get_run(run_id).info.experiment_id], f"tags.reproduces = '{run_id}'")
    assert new.info.status == "FINISHED"
    assert new.data.metrics["test_accuracy"] == pytest.approx(claimed - 0.25)
