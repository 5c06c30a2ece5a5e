"""One batch job: skip what the output already holds, run an engine, write whole chunks atomically."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cnn_ocr.batch.output import OutputError, PartWriter, next_part_index, open_output
from cnn_ocr.batch.rows import ModelRef
from cnn_ocr.reader import ReadLimits

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class BatchOptions:
    """How to run: engine, parallelism, work-unit sizes, resume, and the Ray cluster to join."""

    engine: str = "local"
    workers: int = 2
    batch_size: int = 128  # files one worker reads per call
    chunk_size: int = 2048  # rows per part file: the most an interrupted job loses
    resume: bool = False
    ray_address: str | None = None


@dataclass(frozen=True)
class BatchSummary:
    """What a job did."""

    total: int
    skipped: int
    written: int
    errors: int
    seconds: float
    parts: int

    @property
    def images_per_s(self) -> float:
        """Rows written per second of the run (engine start-up included)."""
        return self.written / self.seconds if self.seconds > 0 else 0.0


def _engine(paths: Sequence[str], ref: ModelRef, limits: ReadLimits, options: BatchOptions) -> Iterable[pa.Table]:
    if options.engine == "local":
        from cnn_ocr.batch.engines import run_local

        return run_local(paths, ref, limits, workers=options.workers, batch_size=options.batch_size)
    if options.engine == "ray":
        from cnn_ocr.batch.engines import run_ray

        return run_ray(paths, ref, limits, workers=options.workers, batch_size=options.batch_size,
                       address=options.ray_address)
    raise ValueError(f"unknown engine {options.engine!r}; choose one of {', '.join(ENGINES)}")


def _pending(paths: Sequence[str], out: Path, ref: ModelRef, resume: bool) -> tuple[list[str], int]:
    existing = open_output(out, resume)
    other = existing.models - {(ref.name, ref.version)}
    if other:
        name, version = sorted(other)[0]
        raise OutputError(f"{out} holds rows read by {name} version {version}, not {ref.name} version "
                          f"{ref.version}; resume with that model or choose another --out")
    return [p for p in paths if p not in existing.paths], len(existing.paths & set(paths))


def run_batch(paths: Sequence[str], out: Path, ref: ModelRef, limits: ReadLimits, options: BatchOptions,
              on_progress: Callable[[int], None] | None = None) -> BatchSummary:
    """Read every path not yet in `out` and write the rows, `chunk_size` per part file."""
    todo, skipped = _pending(paths, out, ref, options.resume)
    writer = PartWriter(out, next_part_index(out))
    start, errors, buffer = time.perf_counter(), 0, []
    buffered = 0
    if todo:
        for table in _engine(todo, ref, limits, options):
            errors += int(pc.sum(pc.is_valid(table.column("error"))).as_py() or 0)
            buffer.append(table)
            buffered += table.num_rows
            while buffered >= options.chunk_size:
                merged = pa.concat_tables(buffer)
                writer.write(merged.slice(0, options.chunk_size))
                rest = merged.slice(options.chunk_size)
                buffer, buffered = ([rest] if rest.num_rows else []), rest.num_rows
            if on_progress is not None:
                on_progress(table.num_rows)
        if buffered:
            writer.write(pa.concat_tables(buffer))
    seconds = time.perf_counter() - start
    log.info("batch: %d rows written (%d errors), %d skipped, %.1f s", writer.rows, errors, skipped, seconds)
    return BatchSummary(len(paths), skipped, writer.rows, errors, seconds, writer.next_index)
