"""The Git state a run records: the commit, and whether tracked code differs from it."""

from __future__ import annotations

import subprocess

from cnn_ocr.project import project_root

# Tracked files that the pipeline and the benchmarks write themselves (DVC metrics, plots, lock file, the
# generated report, tuning results, benchmark results): changes there do not make a run's code differ.
GENERATED_PATHS = ("dvc.lock", "metrics", "plots", "tuning", "ml", "benchmarks/results")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


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
