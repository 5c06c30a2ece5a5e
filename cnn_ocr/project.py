"""Where the project is: the folder commands run from, like every relative path in params.yaml.

The embedded stores (MLflow's `mlflow.db`, Optuna's `optuna.db`), the offline tracking store and the
training checkpoints live under it unless an environment variable points elsewhere.
"""

from __future__ import annotations

from pathlib import Path


def project_root() -> Path:
    """The project folder (the working directory, resolved)."""
    return Path.cwd().resolve()
