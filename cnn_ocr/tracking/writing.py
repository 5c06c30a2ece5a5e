"""Logging to runs: params, metrics, tags, datasets, figures, text, artifacts and the trained model.

Every write to the active run goes through `runs.journaled` (signal-safe, journaled, moved to the offline
store if the server is lost mid-run). `log_artifacts` adds files to a named, possibly finished run.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from cnn_ocr.tracking.runs import journaled
from cnn_ocr.tracking.store import MAX_TAG_LEN, MODEL_ARTIFACT, client

# Requirements written with logged models (inferring them costs 10+ s per model).
TORCH_REQUIREMENTS = ["torch==2.13.0", "numpy>=2"]


@journaled
def log_params(flat: dict[str, Any]) -> None:
    """Log flattened params (lists and None as JSON text)."""
    import mlflow

    clean = {k: (json.dumps(v) if isinstance(v, list | dict) or v is None else v) for k, v in flat.items()}
    items = list(clean.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start : start + 100]))


@journaled
def set_tags(tags: dict[str, Any]) -> None:
    """Set run tags (values as text)."""
    import mlflow

    mlflow.set_tags({k: str(v)[:MAX_TAG_LEN] for k, v in tags.items()})


@journaled
def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics at `step`."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


@journaled
def log_dataset(features: Any, targets: Any, name: str, source: str, digest: str, context: str) -> None:
    """Record a data split as an MLflow run input with a stable digest."""
    import mlflow

    with warnings.catch_warnings():
        # A local path matches two registered source kinds that are the same class; MLflow warns and picks it.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        ds = mlflow.data.from_numpy(features, targets=targets, source=source, name=name, digest=digest[:32])
    mlflow.log_input(ds, context=context)


def log_figure(fig: Any, path: str) -> None:
    """Save a matplotlib figure as a PNG run artifact."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _log_bytes(buf.getvalue(), path)


@journaled
def _log_bytes(data: bytes, path: str) -> None:
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        local.write_bytes(data)
        parent = str(Path(path).parent)
        mlflow.log_artifact(str(local), None if parent == "." else parent)


@journaled
def log_text(text: str, path: str) -> None:
    """Save text as a run artifact."""
    import mlflow

    mlflow.log_text(text, path)


@journaled
def log_dict(data: dict[str, Any], path: str) -> None:
    """Save a JSON-serializable dict as a run artifact."""
    import mlflow

    mlflow.log_dict(data, path)


@journaled
def log_artifact(path: Path, artifact_dir: str) -> None:
    """Upload a local file into `artifact_dir` of the active run."""
    import mlflow

    mlflow.log_artifact(str(path), artifact_dir)


def log_artifacts(run_id: str, folder: Path, artifact_path: str) -> None:
    """Upload a folder's files to run `run_id` (possibly finished) under `artifact_path`."""
    client().log_artifacts(run_id, str(folder), artifact_path)


@journaled
def log_model(model: Any, is_torch: bool, input_example: Any, output_example: Any) -> str:
    """Log the model under artifact path "model" with signature and input example; returns its URI.

    CNNs: `mlflow.pytorch`, pickled module ("pickle" format, loads back as the original class; the
    default pt2 export would load back as a GraphModule). SVM: `mlflow.sklearn` in skops format.
    """
    from mlflow.models import infer_signature

    signature = infer_signature(input_example, output_example)
    if is_torch:
        import mlflow.pytorch

        pt_log = logging.getLogger("mlflow.pytorch")
        level = pt_log.level
        pt_log.setLevel(logging.ERROR)  # the pickle format is chosen on purpose; skip MLflow's warning about it
        try:
            info = mlflow.pytorch.log_model(
                model, name=MODEL_ARTIFACT, serialization_format="pickle", signature=signature,
                input_example=input_example, pip_requirements=TORCH_REQUIREMENTS,
            )
        finally:
            pt_log.setLevel(level)
    else:
        import mlflow.sklearn
        import sklearn

        from cnn_ocr.models.svm import SKOPS_TRUSTED_TYPES

        info = mlflow.sklearn.log_model(
            model, name=MODEL_ARTIFACT, serialization_format="skops", skops_trusted_types=SKOPS_TRUSTED_TYPES,
            signature=signature, input_example=input_example, pyfunc_predict_fn="predict_proba",
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", "skops", "numpy>=2"],
        )
    return info.model_uri
