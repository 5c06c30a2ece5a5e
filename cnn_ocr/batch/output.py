"""The result dataset: a folder of Parquet part files, each written under a hidden temporary name and renamed.

A reader (`pyarrow.parquet.read_table(folder)`, `pandas.read_parquet(folder)`) sees only whole parts: a job
killed at any moment leaves complete parts plus at most one hidden temporary file, which the next run
removes. `--resume` reads the `path` column of the parts and skips those files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DIGIT = pa.struct([("digit", pa.int8()), ("confidence", pa.float64()), ("status", pa.string()),
                   ("box", pa.list_(pa.int32(), 4))])
SCHEMA = pa.schema([
    ("path", pa.string()), ("text", pa.string()), ("digits", pa.list_(DIGIT)), ("status", pa.string()),
    ("reason", pa.string()), ("ood_score", pa.float64()), ("model_name", pa.string()),
    ("model_version", pa.string()), ("error", pa.string()),
])
PART = re.compile(r"^part-(\d{6})\.parquet$")


class OutputError(ValueError):
    """An output location that cannot be used as asked (exists without --resume, holds another model's rows)."""


@dataclass(frozen=True)
class Existing:
    """What earlier runs left in the output: the paths done and the models that read them."""

    paths: set[str]
    models: set[tuple[str, str]]
    parts: int


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if PART.match(p.name)) if folder.is_dir() else []


def open_output(folder: Path, resume: bool) -> Existing:
    """Check `folder` and read what is already done; leftover temporary files of a killed run are removed."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file; --out names a folder of Parquet parts (e.g. results.parquet)")
    parts = _parts(folder)
    if folder.is_dir() and any(folder.iterdir()) and not resume:
        raise OutputError(f"{folder} already exists; pass --resume to continue that job or choose another --out")
    foreign = [p.name for p in folder.iterdir() if not (PART.match(p.name) or p.name.startswith(".part-"))] \
        if folder.is_dir() else []
    if foreign:
        raise OutputError(f"{folder} holds files that are not batch results ({foreign[0]}); choose another --out")
    for tmp in folder.glob(".part-*.tmp") if folder.is_dir() else []:
        tmp.unlink()
    paths: set[str] = set()
    models: set[tuple[str, str]] = set()
    for part in parts:
        table = pq.read_table(part, columns=["path", "model_name", "model_version"])
        paths.update(table.column("path").to_pylist())
        models.update(zip(table.column("model_name").to_pylist(), table.column("model_version").to_pylist(),
                          strict=True))
    return Existing(paths, models, len(parts))


class PartWriter:
    """Writes tables as numbered part files, each atomically (temporary name, fsync, rename)."""

    def __init__(self, folder: Path, first_index: int) -> None:
        self.folder = Path(folder)
        self.next_index = first_index
        self.rows = 0

    def write(self, table: pa.Table) -> Path:
        """Write one part; returns its final path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{self.next_index:06d}.parquet"
        tmp, final = self.folder / f".{name}.tmp", self.folder / name
        pq.write_table(table.cast(SCHEMA), tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        self.next_index += 1
        self.rows += table.num_rows
        return final


def next_part_index(folder: Path) -> int:
    """One past the highest part number in `folder` (0 when there is none)."""
    numbers = [int(PART.match(p.name).group(1)) for p in _parts(Path(folder))]
    return max(numbers, default=-1) + 1
