"""MLflow tracking: the only module that opens runs and logs to them.

Default store: `sqlite:///<project>/mlflow.db` with artifacts in `<project>/mlartifacts` (both git-ignored);
no server needed. `MLFLOW_TRACKING_URI` points it anywhere else (a remote `mlflow server`, DAGsHub,
Databricks) with no code change; `OCR_MLFLOW_ARTIFACT_ROOT` overrides where new experiments keep artifacts.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cnn_ocr.families import BASELINE_EXPERIMENT, FAMILY_EXPERIMENTS, IMPROVED_EXPERIMENT  # noqa: F401 (the experiments of the families)

log = logging.getLogger(__name__)

TUNING_EXPERIMENT = "hyperparameter-tuning"
ARTIFACT_ROOT_ENV = "OCR_MLFLOW_ARTIFACT_ROOT"
MODEL_ARTIFACT = "model"
# Requirements written with logged models (inferring them costs 10+ s per model).
TORCH_REQUIREMENTS = ["torch==2.13.0", "numpy>=2"]
MAX_TAG_LEN = 5000


def project_root() -> Path:
    """The project folder: commands run from it, like every relative path in params.yaml."""
    return Path.cwd().resolve()


def default_tracking_uri() -> str:
    """The embedded store: a sqlite file at the project root."""
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    """Artifacts of the embedded store."""
    return project_root() / "mlartifacts"


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else the embedded default; the offline store after `go_offline`."""
    if _OFFLINE["for"]:
        return offline_uri()
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


# --- offline fallback: a tracking server that cannot be reached when a run starts ---
OFFLINE_DIR_ENV = "OCR_MLFLOW_OFFLINE_DIR"
_OFFLINE: dict[str, str | None] = {"for": None}


def offline_uri() -> str:
    """The local store that takes runs while the tracking server is down (`OCR_MLFLOW_OFFLINE_DIR`)."""
    folder = Path(os.environ.get(OFFLINE_DIR_ENV) or project_root() / "outputs" / "offline-tracking")
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'mlflow.db'}"


def offline_target() -> str | None:
    """The unreachable server this process's runs are meant for, when it went offline."""
    return _OFFLINE["for"]


def sync_command(server: str) -> str:
    """The exact command that copies the offline runs to `server` once it is back."""
    return f"MLFLOW_TRACKING_URI={server} ocr sync"


def store_reachable(uri: str, timeout_s: float = 5.0) -> bool:
    """False only for an HTTP(S) tracking server that does not answer; other stores are local or managed."""
    if not uri.startswith(("http://", "https://")):
        return True
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False


def go_offline(server: str) -> None:
    """Send this process's runs to the local offline store and say how to sync them later."""
    _OFFLINE["for"] = server
    log.warning("tracking server %s is unreachable; recording runs locally in %s; when it is back, run: %s",
                server, offline_uri(), sync_command(server))


def _artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts; None lets a remote server decide."""
    if os.environ.get(ARTIFACT_ROOT_ENV):
        return Path(os.environ[ARTIFACT_ROOT_ENV]).resolve().as_uri()
    if uri == default_tracking_uri():
        return default_artifact_root().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None


# MLflow retries a refused HTTP connection 7 times with exponential backoff (about 2 minutes per call);
# a server that is down should cost a training run seconds, not minutes. MLflow's own variables still win.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def configure() -> str:
    """Point the MLflow client at the store; returns the URI."""
    import mlflow

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(key, value)
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The id of experiment `name`, created (with the store's artifact root) when missing."""
    from mlflow import MlflowClient

    uri = configure()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    root = _artifact_root(uri)
    location = f"{root}/{name}" if root else None
    return client.create_experiment(name, artifact_location=location)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# Tracked files that the pipeline and the benchmarks write themselves (DVC metrics, plots, lock file, the
# generated report, tuning results, benchmark results): changes there do not make a run's code differ.
GENERATED_PATHS = ("dvc.lock", "metrics", "plots", "tuning", "ml", "benchmarks/results")


def git_status_args() -> list[str]:
    """`git status` arguments listing changed tracked files other than `GENERATED_PATHS`."""
    return ["status", "--porcelain", "--untracked-files=no", "--", ".", *[f":(exclude){p}" for p in GENERATED_PATHS]]


def git_tags() -> dict[str, str]:
    """`git_commit` (HEAD or 'unknown') and `git_dirty` ('true' when tracked files other than the pipeline's
    own outputs have changes: a main job rewriting metrics/ between its stages stays clean)."""
    commit = _git("rev-parse", "HEAD")
    status = _git(*git_status_args())
    dirty = "unknown" if status is None else ("true" if status else "false")
    return {"git_commit": commit or "unknown", "git_dirty": dirty}


# --- Ctrl-C / SIGTERM never land in the middle of a write to the store (it would leave sqlite locked) ---
_GUARD = {"depth": 0, "pending": False}


def interrupt_handler(signum: int, frame: Any) -> None:
    """Signal handler raising KeyboardInterrupt, held back until a write to the store in progress is done."""
    if _GUARD["depth"]:
        _GUARD["pending"] = True
        return
    raise KeyboardInterrupt


def _guarded(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _GUARD["depth"] += 1
        try:
            result = func(*args, **kwargs)
        finally:
            _GUARD["depth"] -= 1
        if _GUARD["pending"] and not _GUARD["depth"]:
            _GUARD["pending"] = False
            raise KeyboardInterrupt
        return result

    return wrapper


# --- failover: a tracking server that stops answering while runs are open ---
# Every open `tracked_run` keeps a journal of what was logged to it. When a logging call fails and the HTTP
# server no longer answers, the open runs are re-created in the offline store, their journals replayed, and
# the call retried there: training goes on and ends with everything stored locally, ready for `ocr sync`.
_FRAMES: list[dict[str, Any]] = []


def _server_lost() -> bool:
    """True when runs are open against an HTTP server that no longer answers (and we are not offline yet)."""
    uri = tracking_uri()
    return bool(_FRAMES) and not offline_target() and uri.startswith(("http://", "https://")) \
        and not store_reachable(uri, timeout_s=3.0)


def _drop_server_runs() -> None:
    """Forget the runs open on the lost server without waiting on it (MLflow pops a run before ending it)."""
    import mlflow

    previous = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        while mlflow.active_run() is not None:
            with contextlib.suppress(Exception):
                mlflow.end_run("FAILED")
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = previous


def _fail_over() -> None:
    """Move the open runs to the offline store, replaying what each had logged."""
    import mlflow

    server = tracking_uri()
    _drop_server_runs()
    go_offline(server)
    for frame in _FRAMES:
        tags = {**frame["tags"], "offline_for": server, "server_run_id": frame["server_run_id"]}
        experiment_id = ensure_experiment(frame["experiment"])
        run = mlflow.start_run(experiment_id=experiment_id, run_name=frame["run_name"], tags=tags,
                               nested=frame["nested"])
        for func, args, kwargs in frame["calls"]:
            func(*args, **kwargs)
        log.warning("run %s continues offline as run %s (%d logging calls replayed)", frame["server_run_id"],
                    run.info.run_id, len(frame["calls"]))


def _logging(func: Callable) -> Callable:
    """A write to the active run: guarded against signals, journaled, moved offline if the server is lost."""
    guarded = _guarded(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = guarded(*args, **kwargs)
        except Exception:
            if not _server_lost():
                raise
            _fail_over()
            result = guarded(*args, **kwargs)
        if _FRAMES:
            _FRAMES[-1]["calls"].append((guarded, args, kwargs))
        return result

    return wrapper


def current_run_id() -> str | None:
    """The id of the innermost open run (after a failover: its offline copy)."""
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run else None


def _end_tags(exc: BaseException) -> tuple[str, dict[str, str]]:
    name = type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED", {"interrupted": "true"}
    if name == "TrialPruned":
        return "KILLED", {"pruned": "true"}
    return "FAILED", {"error": f"{name}: {exc}"[:MAX_TAG_LEN]}


@contextlib.contextmanager
def tracked_run(
    experiment: str, run_name: str | None = None, tags: dict[str, str] | None = None, nested: bool = False
) -> Iterator[Any]:
    """Open one MLflow run and always close it in the right state.

    When an HTTP tracking server does not answer, the run goes to a local offline store (`go_offline`).
    FINISHED on success; KILLED on Ctrl-C (tag `interrupted`) or an exception named TrialPruned (tag
    `pruned=true`); FAILED with the error as tag `error` on any other exception, which is re-raised.
    Under `mlflow run` (MLFLOW_RUN_ID set) the project's run is used instead of a new one. When the server
    stops answering while the run is open, the run continues in the offline store (`_fail_over`); the
    yielded run object keeps the server's id, `current_run_id()` gives the one in use.
    """
    import mlflow

    tags = dict(tags or {})
    if not nested and mlflow.active_run() is None and not offline_target() and not store_reachable(tracking_uri()):
        go_offline(tracking_uri())
    if offline_target():
        tags["offline_for"] = str(offline_target())
    experiment_id = ensure_experiment(experiment)
    kwargs: dict[str, Any] = {"run_name": run_name, "tags": tags, "nested": nested}
    if nested and mlflow.active_run() is not None:
        kwargs["experiment_id"] = mlflow.active_run().info.experiment_id
    elif not os.environ.get("MLFLOW_RUN_ID"):
        kwargs["experiment_id"] = experiment_id
    run = _guarded(mlflow.start_run)(**kwargs)
    _FRAMES.append({"experiment": experiment, "run_name": run_name, "tags": tags, "nested": nested,
                    "server_run_id": run.info.run_id, "calls": []})
    try:
        yield run
    except BaseException as exc:
        status, extra = _end_tags(exc)
        with contextlib.suppress(Exception):
            set_tags(extra)
        _end_run(status)
        raise
    else:
        _end_run("FINISHED")
    finally:
        _FRAMES.pop()


def _end_run(status: str) -> None:
    """End the innermost run; if the server is lost at this very moment, end its offline copy instead."""
    import mlflow

    try:
        mlflow.end_run(status)
    except Exception:
        if not _server_lost():
            raise
        _fail_over()
        mlflow.end_run(status)


@_logging
def log_params(flat: dict[str, Any]) -> None:
    """Log flattened params (lists and None as JSON text)."""
    import mlflow

    clean = {k: (json.dumps(v) if isinstance(v, list | dict) or v is None else v) for k, v in flat.items()}
    items = list(clean.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start : start + 100]))


@_logging
def set_tags(tags: dict[str, Any]) -> None:
    """Set run tags (values as text)."""
    import mlflow

    mlflow.set_tags({k: str(v)[:MAX_TAG_LEN] for k, v in tags.items()})


@_logging
def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics at `step`."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


@_logging
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


@_logging
def _log_bytes(data: bytes, path: str) -> None:
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        local.write_bytes(data)
        parent = str(Path(path).parent)
        mlflow.log_artifact(str(local), None if parent == "." else parent)


@_logging
def log_text(text: str, path: str) -> None:
    """Save text as a run artifact."""
    import mlflow

    mlflow.log_text(text, path)


@_logging
def log_dict(data: dict[str, Any], path: str) -> None:
    """Save a JSON-serializable dict as a run artifact."""
    import mlflow

    mlflow.log_dict(data, path)


@_logging
def log_artifact(path: Path, artifact_dir: str) -> None:
    """Upload a local file into `artifact_dir` of the active run."""
    import mlflow

    mlflow.log_artifact(str(path), artifact_dir)


def download_artifact(run_id: str, path: str, dest: Path) -> Path:
    """Download one artifact of a run into folder `dest`; returns the local path."""
    from mlflow import MlflowClient

    return Path(MlflowClient(configure()).download_artifacts(run_id, path, str(dest)))


def load_run_dict(run_id: str, path: str) -> dict[str, Any]:
    """A JSON artifact of a run (e.g. params.json)."""
    import mlflow

    configure()
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")


def last_run_id() -> str | None:
    """The id of the run this process started last (also after it ended), if any."""
    import mlflow

    with contextlib.suppress(Exception):
        run = mlflow.last_active_run()
        return run.info.run_id if run else None
    return None


def run_record(run_id: str) -> dict[str, Any]:
    """Status, tags, run name and experiment name of a run."""
    from mlflow import MlflowClient

    client = MlflowClient(configure())
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id).name
    return {"status": run.info.status, "tags": dict(run.data.tags), "run_name": run.info.run_name,
            "experiment": experiment}


@_logging
def log_model(model: Any, is_torch: bool, input_example: Any, output_example: Any) -> str:
    """Log the model under artifact path "model" with signature and input example; returns its URI.

    CNNs: `mlflow.pytorch`, pickled module ("pickle" format, loads back as the original class; the
    default pt2 export would load back as a GraphModule). SVM: `mlflow.sklearn` in skops format.
    """
    import mlflow
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


def load_model(run_id: str) -> Any:
    """Load a run's logged model in its native flavor (torch module or sklearn estimator)."""
    import mlflow

    configure()
    uri = f"runs:/{run_id}/{MODEL_ARTIFACT}"
    flavors = mlflow.models.get_model_info(uri).flavors
    if "pytorch" in flavors:
        import mlflow.pytorch

        return mlflow.pytorch.load_model(uri, map_location="cpu")
    import mlflow.sklearn

    return mlflow.sklearn.load_model(uri)


def run_link(run_id: str, ui_base: str) -> str:
    """The run's page in an MLflow UI at `ui_base` (experiment looked up in the store)."""
    from mlflow import MlflowClient

    run = MlflowClient(configure()).get_run(run_id)
    return f"{ui_base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def _copy_run(src: Any, dst: Any, run: Any, target: str) -> str:
    """Copy one finished offline run (tags, params, metric histories, artifacts, logged model) to `dst`."""
    import tempfile

    from mlflow.entities import Metric, Param

    name = src.get_experiment(run.info.experiment_id).name
    exp = dst.get_experiment_by_name(name)
    root = _artifact_root(target)
    exp_id = exp.experiment_id if exp else dst.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.note.content"}
    new = dst.create_run(exp_id, start_time=run.info.start_time, run_name=run.info.run_name,
                         tags={**tags, "synced_from_offline_run": run.info.run_id})
    params = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(params), 100):
        dst.log_batch(new.info.run_id, params=params[i:i + 100])
    for key in run.data.metrics:
        history = [Metric(m.key, m.value, m.timestamp, m.step) for m in src.get_metric_history(run.info.run_id, key)]
        for i in range(0, len(history), 1000):
            dst.log_batch(new.info.run_id, metrics=history[i:i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        if src.list_artifacts(run.info.run_id):
            dst.log_artifacts(new.info.run_id, src.download_artifacts(run.info.run_id, "", tmp))
        outputs = getattr(run, "outputs", None)
        for model in (outputs.model_outputs if outputs and outputs.model_outputs else [])[-1:]:
            import mlflow

            location = src.get_logged_model(model.model_id).artifact_location
            folder = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=f"{tmp}/model")
            dst.log_artifacts(new.info.run_id, folder, MODEL_ARTIFACT)
    dst.set_terminated(new.info.run_id, run.info.status, end_time=run.info.end_time)
    _close_partial(dst, run.data.tags.get("server_run_id"), new.info.run_id)
    src.set_tag(run.info.run_id, "synced_to", f"{target} run {new.info.run_id}")
    return new.info.run_id


def _close_partial(dst: Any, server_run_id: str | None, complete_id: str) -> None:
    """The run a lost server kept open (it never heard the end): FAILED, pointing at its complete copy."""
    if not server_run_id:
        return
    try:
        partial = dst.get_run(server_run_id)
    except Exception:  # not on this server (synced elsewhere, or deleted)
        return
    if partial.info.status == "RUNNING":
        dst.set_tag(server_run_id, "continued_as", complete_id)
        dst.set_tag(server_run_id, "error", f"tracking server lost mid-run; the complete run is {complete_id}")
        dst.set_terminated(server_run_id, "FAILED")


def sync_offline(target: str | None = None) -> list[tuple[str, str]]:
    """Copy every finished, not yet synced offline run to `target` (default: `MLFLOW_TRACKING_URI`).

    Returns (offline run id, new run id) pairs. Raises ConnectionError while the target is unreachable.
    """
    from mlflow import MlflowClient

    target = target or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if not store_reachable(target):
        raise ConnectionError(f"tracking server {target} is still unreachable; nothing was synced")
    src, dst = MlflowClient(offline_uri()), MlflowClient(target)
    copied = []
    for exp in src.search_experiments():
        for run in src.search_runs([exp.experiment_id], max_results=10_000):
            if run.info.status != "RUNNING" and "synced_to" not in run.data.tags:
                copied.append((run.info.run_id, _copy_run(src, dst, run, target)))
    return copied
