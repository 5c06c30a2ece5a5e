"""Main-job benchmark: the wall time of each `dvc.yaml` stage and of the whole pipeline.

Each stage runs as `dvc repro --single-item --force <stage>` in pipeline order, timed on its own; the total
is the sum plus DVC's own overhead between stages. Smoke mode times the same orchestration on a two-stage
throw-away DVC project instead of the real (tens of minutes) pipeline.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import ROOT, summarize, target, write_result

log = logging.getLogger(__name__)

BUDGET_S = 30 * 60
SMOKE_DVC_YAML = {"stages": {
    "make_numbers": {"cmd": "python -c \"import numpy as np; np.save('numbers.npy', np.arange(1000))\"",
                     "outs": ["numbers.npy"]},
    "sum_numbers": {"cmd": "python -c \"import numpy as np; open('total.txt', 'w').write(str(np.load('numbers.npy').sum()))\"",
                    "deps": ["numbers.npy"], "outs": ["total.txt"]},
}}


def pipeline_stages(project: Path) -> list[str]:
    """Stage names of `project/dvc.yaml` in file order (the order `dvc repro` runs them in here)."""
    return list((yaml.safe_load((project / "dvc.yaml").read_text()) or {}).get("stages", {}))


def _dvc(args: list[str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def time_stages(project: Path, stages: list[str], timeout_s: float) -> dict[str, Any]:
    """Run each stage once, in order; per-stage seconds, exit codes and the whole wall time."""
    rows, t_all = [], time.perf_counter()
    for stage in stages:
        t0 = time.perf_counter()
        proc = _dvc(["repro", "--single-item", "--force", stage], project, timeout_s)
        rows.append({"stage": stage, "seconds": time.perf_counter() - t0, "returncode": proc.returncode})
        log.info("stage %s: %.1f s (exit %d)", stage, rows[-1]["seconds"], proc.returncode)
        if proc.returncode != 0:
            rows[-1]["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            break
    return {"stages": rows, "total_s": time.perf_counter() - t_all,
            "completed": len(rows) == len(stages) and all(r["returncode"] == 0 for r in rows)}


def _smoke_project(tmp: Path) -> Path:
    (tmp / "dvc.yaml").write_text(yaml.safe_dump(SMOKE_DVC_YAML, sort_keys=False))
    proc = _dvc(["init", "--no-scm", "-q"], tmp, 120)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc init failed: {proc.stderr.strip()}")
    return tmp


def run(smoke: bool = False, out_dir: Path | None = None, repeats: int = 1, stages: list[str] | None = None) -> Path:
    """Time the main job (`repeats` times) and write `mainjob.json`; returns its path."""
    with tempfile.TemporaryDirectory() as tmp:
        project = _smoke_project(Path(tmp)) if smoke else ROOT
        chosen = stages or pipeline_stages(project)
        reps = [time_stages(project, chosen, 3600) for _ in range(max(1, repeats if not smoke else 2))]
    per_stage = {s: summarize([r["seconds"] for rep in reps for r in rep["stages"] if r["stage"] == s]) for s in chosen}
    fig = {"stages": per_stage, "total_s": summarize([r["total_s"] for r in reps]),
           "completed": all(r["completed"] for r in reps), "runs": reps}
    complete_pipeline = not smoke and stages is None
    targets = [target("whole main job (dvc stages fetch -> report)", fig["total_s"]["median"] if fig["completed"] else None,
                      BUDGET_S, "s", False, "" if fig["completed"] else "a stage failed")] if complete_pipeline else []
    from benchmarks.common import RESULTS_DIR

    settings = {"smoke": smoke, "stages": chosen, "command": "dvc repro --single-item --force <stage>"}
    return write_result("mainjob", "smoke" if smoke else "full", fig, targets, "cpu", settings, out_dir or RESULTS_DIR)
