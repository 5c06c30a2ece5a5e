"""What to read: a folder (every file in it, recursively), a glob, a single file, or a manifest.

A manifest is a CSV or Parquet file with a `path` column; relative paths in it are relative to the
manifest's own folder. Paths keep the spelling they were given (that spelling is the row's key for
`--resume`); a path named twice is read once.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

MANIFEST_SUFFIXES = (".csv", ".parquet")
GLOB_CHARS = set("*?[")


class InputError(ValueError):
    """An input that names nothing readable, or a manifest without a usable `path` column."""


def _folder(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _manifest(path: Path) -> list[str]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["path"]) if path.suffix == ".parquet" else \
            pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=["path"]))
    except Exception as exc:  # pyarrow raises several types for a missing column or an unreadable file
        raise InputError(f"manifest {path} cannot be read or has no 'path' column "
                         f"({str(exc).splitlines()[0][:200]}); give a CSV or Parquet file with a 'path' column") from None
    out = []
    for value in table.column("path").to_pylist():
        if value is None or not str(value).strip():
            continue
        p = Path(str(value))
        out.append(str(p if p.is_absolute() else path.parent / p))
    return out


def _one(spec: str) -> list[str]:
    path = Path(spec)
    if path.is_dir():
        return _folder(path)
    if path.is_file():
        return _manifest(path) if path.suffix.lower() in MANIFEST_SUFFIXES else [spec]
    if GLOB_CHARS & set(spec):
        matches = sorted(m for m in glob.glob(spec, recursive=True) if Path(m).is_file())
        if not matches:
            raise InputError(f"the pattern {spec!r} matches no files")
        return matches
    raise InputError(f"{spec} does not exist; give a folder, a glob pattern, an image or a CSV/Parquet manifest")


def list_inputs(specs: Sequence[str]) -> list[str]:
    """Every path the inputs name, in order, each once; `InputError` for an input that names nothing."""
    seen: dict[str, None] = {}
    for spec in specs:
        for path in _one(spec):
            seen.setdefault(path, None)
    return list(seen)
