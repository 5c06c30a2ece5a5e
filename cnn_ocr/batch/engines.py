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
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from cnn_ocr.batch.rows import ModelRef, load_session_model, read_rows
from cnn_ocr.reader import ReadLimits

log = logging.getLogger(__name__)

_WORKER: dict[str, Any] = {}  # per worker process: the model, its reference and the limits


def _init_worker(ref: ModelRef, limits: ReadLimits) -> None:
    _WORKER.update(model=load_session_model(ref), ref=ref, limits=limits)


def _read_batch(paths: list[str]) -> pa.Table:
    return read_rows(paths, _WORKER["model"], _WORKER["ref"], _WORKER["limits"])


def _batches(paths: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(paths), size):
        yield list(paths[i:i + size])


def run_local(paths: Sequence[str], ref: ModelRef, limits: ReadLimits, *, workers: int,
              batch_size: int) -> Iterator[pa.Table]:
    """Result tables from a pool of `workers` processes, in input order."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(ref, limits)) as pool:
        yield from pool.imap(_read_batch, _batches(paths, batch_size))


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
    finally:
        if started:
            ray.shutdown()
