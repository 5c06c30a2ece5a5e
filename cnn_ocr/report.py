"""`ocr report`: regenerate `ml/README_experiments.md` and its figures entirely from the tracking store.

Every number in the document is written through `Doc.v`, which records where it came from (a run's metric,
param, tag or start time, a registered version's tag, or a difference of two metrics). Nothing is typed by
hand; the provenance lets a test re-read each value from the store and compare. Identifiers (run ids,
commits, versions, paths, commands) are written as code spans.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cnn_ocr.atomic_files import atomic_dir, atomic_write_bytes
from cnn_ocr.config import Params
from cnn_ocr.registry import ModelVersionInfo
from cnn_ocr.report_sections import render
from cnn_ocr.tracking.reading import RunRecord, download_artifacts, get_run

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"


class ReportError(ValueError):
    """A report request that cannot be served (no such section, no report to refresh); says what to do."""


def _date(ms: Any) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%d")


def _param(text: str) -> str:
    """A logged param as written: floats to 4 significant digits, anything else verbatim."""
    try:
        value = float(text)
    except ValueError:
        return str(text)
    return str(text) if text.lstrip("-").isdigit() or text in ("True", "False") else f"{value:.4g}"


def _half_means(values: tuple) -> float:
    """Mean of the first half of `values` minus the mean of the second half (two equal groups of runs)."""
    half = len(values) // 2
    first, second = [float(v) for v in values[:half]], [float(v) for v in values[half:]]
    return sum(first) / len(first) - sum(second) / len(second)


def _space(text: str) -> str:
    """A logged search dimension (JSON) as a range or a list of choices."""
    dim = json.loads(text)
    if dim.get("choices") is not None:
        return "one of " + ", ".join(str(c) for c in dim["choices"])
    scale = " (log scale)" if dim.get("log") else ""
    return f"{dim['low']:g} to {dim['high']:g}{scale}"


FORMATS = {
    "pct": lambda v: f"{float(v) * 100:.2f}%",
    "pts": lambda v: f"{float(v):.2f}",
    "auroc": lambda v: f"{float(v):.3f}",
    "s": lambda v: f"{float(v):.1f}",
    "ms": lambda v: f"{float(v):.2f}",
    "int": lambda v: str(int(round(float(v)))),
    "raw": str,
    "mean_pct": lambda *v: f"{sum(float(x) for x in v) / len(v) * 100:.2f}%",
    "mean_gain_pts": lambda *v: f"{_half_means(v) * 100:+.2f}",
    "param": _param,
    "space": _space,
    "loss": lambda v: f"{float(v):.4f}",
    "date": _date,
    "diff_pct": lambda a, b: f"{(float(a) - float(b)) * 100:+.2f}",
}


@dataclass(frozen=True)
class Source:
    """Where a value lives: kind in metric | param | tag | start | version_tag; ref: a run id or NAME:VERSION."""

    kind: str
    ref: str
    key: str


@dataclass(frozen=True)
class Value:
    """A number as written in the report, its format and its sources."""

    text: str
    fmt: str
    sources: tuple[Source, ...]
    raw: tuple[Any, ...]


@dataclass
class Doc:
    """Markdown lines plus the provenance of every value written into them; figures go to `figure_dir`."""

    figure_dir: Path
    lines: list[str] = field(default_factory=list)
    values: list[Value] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def v(self, fmt: str, *sources: tuple[str, RunRecord | str, str]) -> str:
        """Format stored value(s) and record their provenance; sources are (kind, run or ref, key)."""
        srcs, raws = [], []
        for kind, where, key in sources:
            ref = where.run_id if isinstance(where, RunRecord) else version_ref(where) if kind == "version_tag" else where
            srcs.append(Source(kind, ref, key))
            raws.append(_lookup(kind, where, key))
        text = FORMATS[fmt](*raws)
        self.values.append(Value(text, fmt, tuple(srcs), tuple(raws)))
        return text

    def metric(self, run: RunRecord, key: str, fmt: str) -> str:
        return self.v(fmt, ("metric", run, key)) if key in run.metrics else "n/a"

    def figure(self, run: RunRecord, artifact: str, name: str, caption: str) -> str | None:
        """Copy a run's image artifact to `figure_dir`/<name> and return a Markdown image line (figures/<name>)."""
        dest = self.figure_dir / name
        with tempfile.TemporaryDirectory() as tmp:
            try:
                src = download_artifacts(run.run_id, artifact, Path(tmp))
            except Exception as exc:  # missing artifact: the report says so instead of failing
                log.warning("run %s has no %s (%s)", run.run_id, artifact, exc)
                return None
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        self.figures.append(dest)
        return f"![{caption}]({FIGURES_DIR}/{name})"


def version_ref(info: ModelVersionInfo) -> str:
    """How a registered version is named in a `Source`: NAME:VERSION."""
    return f"{info.name}:{info.version}"


def _lookup(kind: str, where: Any, key: str) -> Any:
    if kind == "version_tag":
        return where.tags[key]
    run = where if isinstance(where, RunRecord) else get_run(where)
    if kind == "metric":
        return run.metrics[key]
    if kind == "param":
        return run.params[key]
    if kind == "tag":
        return run.tags[key]
    if kind == "start":
        return run.start_time
    raise ValueError(f"unknown source kind {kind!r}")


def build_report(params: Params, figure_dir: Path) -> Doc:
    """Read the store and render the document; figures are written into `figure_dir`."""
    doc = Doc(Path(figure_dir))
    render(doc, params)
    return doc


def write_report(params: Params, out: Path) -> tuple[Path, int]:
    """Regenerate the report file and its `figures/` folder next to it (stale figures go); returns (path, runs)."""
    out = Path(out)
    with atomic_dir(out.parent / FIGURES_DIR) as figure_dir:
        doc = build_report(params, figure_dir)
        atomic_write_bytes(out, ("\n".join(doc.lines).rstrip() + "\n").encode())
    return out, _run_count(doc)


def _run_count(doc: Doc) -> int:
    return len({s.ref for val in doc.values for s in val.sources if s.kind != "version_tag"})


def refresh_section(name: str, out: Path) -> tuple[Path, int]:
    """Render the standalone section `name` again from the store into the existing report `out`, between its
    heading and the next heading of the same or a higher level, the rest of the file untouched (for runs that
    live in another store than the one the report was generated from, e.g. a benchmark's); returns (path, runs)."""
    from cnn_ocr.report_sections import STANDALONE, refreshed_note

    if name not in STANDALONE:
        raise ReportError(f"no standalone report section {name!r}; choose one of: {', '.join(STANDALONE)}")
    out = Path(out)
    if not out.is_file():
        raise ReportError(f"{out} does not exist; run `ocr report` first")
    doc = Doc(out.parent / FIGURES_DIR)
    STANDALONE[name](doc)
    heading = doc.lines[0]
    level = len(heading) - len(heading.lstrip("#"))
    lines = out.read_text().splitlines()
    if heading not in lines:
        raise ReportError(f"{out} has no section {heading.lstrip('# ')!r}; run `ocr report` to regenerate it whole")
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")
                and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines))
    body = [*doc.lines]
    while body and not body[-1]:
        body.pop()
    lines[start:end] = [*body, "", refreshed_note(), ""]
    atomic_write_bytes(out, ("\n".join(lines).rstrip() + "\n").encode())
    return out, _run_count(doc)
