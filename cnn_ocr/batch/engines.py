"""The two engines. Each yields result tables (any grouping, any order) for the paths it is given.

- local: a process pool (spawned, so no ONNX Runtime state is forked), one one-thread session per worker,
  files handed out `batch_size` at a time.
- ray: Ray Data over the path list, `map_batches` with an actor class holding one session per actor
  (a fixed pool of `workers` actors); joins `ray_address` when given, else starts a local Ray with `workers` CPUs.
  Workers read the files themselves, so on a cluster the paths must be visible to every node.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pyarrow as pa

from cnn_ocr.batch.rows import ModelRef, load_session_model, read_rows
from cnn_ocr.reader import ReadLimits

log = logging.getLogger(__name__)

_WORKER: dict[str, Any] = {}  # per worker process: the model, its reference and the limits


class EngineError(RuntimeError):
    """The engine itself failed (a worker could not load the model, a worker process died)."""


def _init_worker(ref: ModelRef, limits: ReadLimits) -> None:
    try:  # an initializer that raises breaks the whole pool without saying why: keep the reason
        _WORKER.update(model=load_session_model(ref), ref=ref, limits=limits)
    except Exception as exc:
        _WORKER["error"] = f"a worker could not load the model from {ref.folder}: {exc}"


def _read_batch(paths: list[str]) -> pa.Table:
    if "error" in _WORKER:
        raise EngineError(_WORKER["error"])
    return read_rows(paths, _WORKER["model"], _WORKER["ref"], _WORKER["limits"])


def _batches(paths: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(paths), size):
        yield list(paths[i:i + size])


def run_local(paths: Sequence[str], ref: ModelRef, limits: ReadLimits, *, workers: int,
              batch_size: int) -> Iterator[pa.Table]:
    """Result tables from a pool of `workers` processes, in input order (at most 2 batches queued per worker)."""
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(ref, limits))
    pending: deque[Future] = deque()
    try:
        for batch in _batches(paths, batch_size):
            pending.append(pool.submit(_read_batch, batch))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as exc:
        raise EngineError(f"a worker process ended unexpectedly ({exc})") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class RayReader:
    """A Ray Data actor: one ONNX Runtime session, reading the files of each batch of paths."""

    def __init__(self, ref: ModelRef, limits: ReadLimits) -> None:
        self.ref, self.limits = ref, limits
        self.model = load_session_model(ref)

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        """A batch {"path": array of str} -> its result rows."""
        return read_rows([str(p) for p in batch["path"]], self.model, self.ref, self.limits)


def start_ray(address: str | None, workers: int) -> bool:
    """Join the cluster at `address` or start a local Ray; True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=workers, **common)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the command shows its own
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return True


def run_ray(paths: Sequence[str], ref: ModelRef, limits: ReadLimits, *, workers: int, batch_size: int,
            address: str | None = None) -> Iterator[pa.Table]:
    """Result tables from Ray Data (any order); Ray is started here unless already running."""
    import ray

    started = start_ray(address, workers)
    try:
        ds = ray.data.from_items([{"path": p} for p in paths])
        ds = ds.map_batches(RayReader, fn_constructor_kwargs={"ref": ref, "limits": limits}, batch_size=batch_size,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
        yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
    except ray.exceptions.RayError as exc:  # an actor that cannot start, a node lost
        raise EngineError(f"Ray could not finish the job ({str(exc).strip().splitlines()[-1][:300]})") from None
    finally:
        if started:
            ray.shutdown()
