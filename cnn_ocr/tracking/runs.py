"""The tracked-run lifecycle: open a run, always close it in the right state, and keep it alive.

Three guarantees around every run opened with `tracked_run`:
- Ctrl-C / SIGTERM never land in the middle of a write to the store (it would leave sqlite locked): the
  signal handler `interrupt_handler` holds the interrupt back until the write is done.
- Every open run keeps a journal of what was logged to it. When a write fails and the HTTP server no longer
  answers, the open runs are re-created in the offline store, their journals replayed, and the write retried
  there (`fail-over`): training goes on and ends with everything stored locally, ready for `ocr sync`.
- The run ends FINISHED, KILLED or FAILED, with a tag saying why.
Writes to the active run are made fail-safe with the `journaled` decorator (see `cnn_ocr.tracking.writing`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from cnn_ocr.tracking.store import (
    MAX_TAG_LEN,
    ensure_experiment,
    go_offline,
    offline_target,
    store_reachable,
    tracking_uri,
)

log = logging.getLogger(__name__)

_GUARD = {"depth": 0, "pending": False}
# One frame per open `tracked_run`, innermost last: how to re-create the run and the writes made to it.
_FRAMES: list[dict[str, Any]] = []


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


def journaled(func: Callable) -> Callable:
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


def last_run_id() -> str | None:
    """The id of the run this process started last (also after it ended), if any."""
    import mlflow

    with contextlib.suppress(Exception):
        run = mlflow.last_active_run()
        return run.info.run_id if run else None
    return None


def _end_tags(exc: BaseException) -> tuple[str, dict[str, str]]:
    name = type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED", {"interrupted": "true"}
    if name == "TrialPruned":
        return "KILLED", {"pruned": "true"}
    return "FAILED", {"error": f"{name}: {exc}"[:MAX_TAG_LEN]}


@journaled
def _tag_end(tags: dict[str, str]) -> None:
    import mlflow

    mlflow.set_tags(tags)


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
            _tag_end(extra)
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
