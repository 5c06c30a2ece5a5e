"""Refresh the performance table in README.md (between the bench markers) from `benchmarks/results/*.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, ROOT

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ORDER = ("training", "recipes", "tta", "step", "inference", "service", "mainjob", "ood", "photos", "page")
# Targets every full run should report; listed as "not measured" while no result holds them.
EXPECTED = (("training", "improved_cnn test accuracy", "improved_cnn test accuracy, 3 seeds",
             ">= 99.6 % (mean of 3 seeds, each >= 99.55 %)"),
            ("training", "ensemble of", "ensemble of 3 improved_cnn", ">= 99.7 %"),
            ("mainjob", "whole main job", "whole main job", "<= 30 min"))


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if unit == "%":
        return f"{value:.2f} %"
    if unit in ("img/s", "req/s"):
        return f"{value:,.0f} {unit}"
    if unit == "points":
        return f"{value:.3f} points"
    return f"{value:.3g} {unit}" if value < 10 else f"{value:.0f} {unit}"


def render(results: list[dict[str, Any]]) -> str:
    """The Markdown block: one row per target, then where each benchmark ran."""
    lines = ["| benchmark | target | figure (median) | goal | met |", "|---|---|---|---|---|"]
    for res in results:
        for t in res["targets"]:
            mark = "met" if t["met"] else "**not met**"
            note = f" ({t['note']})" if t.get("note") else ""
            lines.append(f"| {res['benchmark']} | {t['name']} | {_fmt(t['value'], t['unit'])}{note} | "
                         f"{t['direction']} {_fmt(t['limit'], t['unit'])} | {mark} |")
    names = [(res["benchmark"], t["name"]) for res in results for t in res["targets"]]
    for bench, prefix, label, goal in EXPECTED:
        if not any(b == bench and n.startswith(prefix) for b, n in names):
            lines.append(f"| {bench} | {label} | not measured | {goal} | **not met** |")
    lines += ["", "| benchmark | mode | date (UTC) | commit | CPU | cores | load (1 min) at start | device |",
              "|---|---|---|---|---|---|---|---|"]
    for res in results:
        commit = res["git_commit"][:8] + ("+dirty" if res["git_dirty"] else "")
        lines.append(f"| {res['benchmark']} | {res['mode']} | {res['date']} | {commit} | {res['cpu_model']} | "
                     f"{res['cores']} | {res.get('load_average_1m_at_start', '?')} | {res['device']} |")
    return "\n".join(lines)


def load_results(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """The result files present, in benchmark order."""
    found = [results_dir / f"{name}.json" for name in ORDER]
    return [json.loads(p.read_text()) for p in found if p.is_file()]


def refresh(readme: Path = ROOT / "README.md", results_dir: Path = RESULTS_DIR) -> bool:
    """Replace the block between the markers; False (file untouched) when the markers are missing."""
    text = readme.read_text()
    if START not in text or END not in text or text.index(START) > text.index(END):
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    block = render(load_results(results_dir))
    readme.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    return True
