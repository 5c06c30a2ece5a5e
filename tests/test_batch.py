"""`ocr batch`: folders, globs and manifests in, one Parquet row per file out; bad files are error rows;
`--resume` after a kill loses and duplicates nothing; the Ray engine gives the local engine's rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from image_files import png
from service_model import copy_model
from typer.testing import CliRunner

from app.main import create_app
from app.settings import Settings
from cnn_ocr.cli import app as ocr_app

ROOT = Path(__file__).resolve().parents[1]
N_GOOD = 60


def run_cli(*args: str) -> tuple[int, str]:
    """Run `ocr ...` in this process; (exit code, stdout + stderr)."""
    result = CliRunner().invoke(ocr_app, list(args))
    return result.exit_code, result.output


def rows(out: Path) -> list[dict]:
    """Every row of a result dataset, sorted by path."""
    return sorted(pq.read_table(out).to_pylist(), key=lambda r: r["path"])


@pytest.fixture(scope="module")
def image_dir(mnist_splits, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """MNIST test digits as PNGs (half as dark ink on white), a blank PNG, a truncated PNG and a text file."""
    folder = tmp_path_factory.mktemp("images")
    labels = {}
    for i in range(N_GOOD):
        img = mnist_splits.test_x[i]
        path = folder / f"digit_{i:03d}.png"
        path.write_bytes(png(img if i % 2 else 255 - img))
        labels[str(path)] = int(mnist_splits.test_y[i])
    (folder / "blank.png").write_bytes(png(np.full((28, 28), 255, np.uint8)))
    (folder / "corrupt.png").write_bytes(png(mnist_splits.test_x[0])[:60])
    (folder / "notes.txt").write_text("not an image\n")
    return folder, labels


def test_folder_gives_one_row_per_file_and_bad_files_are_error_rows(service_model_dir, image_dir, tmp_path):
    folder, labels = image_dir
    out = tmp_path / "results.parquet"
    code, output = run_cli("batch", str(folder), "--out", str(out), "--model-path", str(service_model_dir),
                           "--workers", "2", "--chunk-size", "16", "--batch-size", "8")
    assert code == 0, output
    got = {r["path"]: r for r in rows(out)}
    assert len(got) == N_GOOD + 3 and len(list(out.glob("part-*.parquet"))) == 4  # 63 rows in parts of 16
    for name in ("corrupt.png", "notes.txt"):
        bad = got[str(folder / name)]
        assert bad["status"] == "error" and bad["error"].startswith("undecodable:") and bad["text"] is None
    blank = got[str(folder / "blank.png")]
    assert (blank["status"], blank["reason"], blank["text"], blank["error"]) == ("no_digit", "blank", "", None)
    correct = sum(got[p]["text"] == str(label) for p, label in labels.items())
    assert correct >= 0.9 * N_GOOD, correct
    row = got[next(iter(labels))]
    digit = row["digits"][0]
    assert row["model_name"] == "test-cnn" and row["model_version"] == "1" and row["ood_score"] is None
    assert 0 < digit["confidence"] <= 1 and len(digit["box"]) == 4 and digit["status"] in ("ok", "uncertain")


def test_a_line_of_digits_is_read_left_to_right_with_boxes(service_model_dir, mnist_splits, tmp_path):
    strip = np.concatenate([np.pad(mnist_splits.test_x[i], 6) for i in (0, 1, 2)], axis=1)
    (tmp_path / "in").mkdir()
    line = png(255 - np.kron(strip, np.ones((4, 4), np.uint8)))
    (tmp_path / "in" / "line.png").write_bytes(line)
    code, output = run_cli("batch", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--model-path",
                           str(service_model_dir), "--workers", "1")
    assert code == 0, output
    (row,) = rows(tmp_path / "o")
    assert row["text"] == "".join(str(int(mnist_splits.test_y[i])) for i in (0, 1, 2))
    xs = [d["box"][0] for d in row["digits"]]
    assert xs == sorted(xs) and xs[0] < 160 <= xs[1] < 320 <= xs[2]  # each 40-px digit cell scaled 4x
    # the service's /read gives the same answer for the same file
    settings = Settings(model_path=service_model_dir, feedback_db=tmp_path / "f.db", reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        served = client.post("/read", files={"file": ("line.png", line, "image/png")}).json()
    assert (served["text"], served["status"]) == (row["text"], row["status"])
    keys = ("digit", "confidence", "status", "box")
    assert [{k: d[k] for k in keys} for d in served["digits"]] == [{k: d[k] for k in keys} for d in row["digits"]]


def test_glob_csv_and_parquet_manifests(service_model_dir, image_dir, tmp_path):
    folder, labels = image_dir
    pngs = sorted(str(p) for p in folder.glob("*.png"))
    code, output = run_cli("batch", str(folder / "digit_00*.png"), "--out", str(tmp_path / "g"),
                           "--model-path", str(service_model_dir), "--workers", "1")
    assert code == 0, output
    assert [r["path"] for r in rows(tmp_path / "g")] == [p for p in pngs if Path(p).name.startswith("digit_00")]
    # relative manifest paths are relative to the manifest's folder
    (folder / "manifest.csv").write_text("path,label\n" + "".join(f"{Path(p).name},x\n" for p in pngs[:5]))
    missing = str(folder / "missing.png")  # named by the manifest, gone from the disk
    pq.write_table(pa.table({"path": pngs[5:9] + [missing]}), tmp_path / "manifest.parquet")
    try:
        code, output = run_cli("batch", str(folder / "manifest.csv"), str(tmp_path / "manifest.parquet"), "--out",
                               str(tmp_path / "m"), "--model-path", str(service_model_dir), "--workers", "1")
    finally:
        (folder / "manifest.csv").unlink()
    assert code == 0, output
    got = rows(tmp_path / "m")
    assert [r["path"] for r in got] == pngs[:9] + [missing]
    assert got[-1]["status"] == "error" and got[-1]["error"].startswith("unreadable: No such file")
    assert sum(r["text"] == str(labels.get(r["path"])) for r in got) >= 6  # blank, corrupt and 7 digits


def test_resume_skips_rows_already_written(service_model_dir, image_dir, tmp_path):
    folder, _ = image_dir
    out = tmp_path / "r.parquet"
    first = [str(p) for p in sorted(folder.glob("digit_01*.png"))]
    code, output = run_cli("batch", str(folder / "digit_01*.png"), "--out", str(out), "--model-path",
                           str(service_model_dir), "--workers", "1")
    assert code == 0, output
    code, output = run_cli("batch", str(folder), "--out", str(out), "--model-path", str(service_model_dir))
    assert code == 2 and "already exists; pass --resume" in output
    code, output = run_cli("batch", str(folder), "--out", str(out), "--model-path", str(service_model_dir),
                           "--workers", "2", "--resume")
    assert code == 0, output
    assert f"{N_GOOD + 3 - len(first)} rows written" in output and f"{len(first)} already there" in output
    paths = [r["path"] for r in rows(out)]
    assert len(paths) == len(set(paths)) == N_GOOD + 3
    other = copy_model(service_model_dir, tmp_path / "v2", "2")  # rows of two models never mix
    code, output = run_cli("batch", str(folder), "--out", str(out), "--model-path", str(other), "--resume")
    assert code == 2 and "holds rows read by test-cnn version 1, not test-cnn version 2" in output


def test_bad_arguments_are_one_line_errors_and_leave_nothing(service_model_dir, image_dir, tmp_path):
    folder, _ = image_dir
    cases = [
        (("batch", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o1"), "--model-path", str(service_model_dir)),
         2, "does not exist"),
        (("batch", str(tmp_path / "*.jpg"), "--out", str(tmp_path / "o2"), "--model-path", str(service_model_dir)),
         2, "matches no files"),
        (("batch", str(folder), "--out", str(tmp_path / "o3"), "--model-path", str(tmp_path / "no-model")),
         3, "no model to serve"),
        (("batch", str(folder), "--out", str(tmp_path / "o4"), "--model-path", str(service_model_dir), "--engine",
          "spark"), 2, "unknown engine"),
    ]
    (tmp_path / "bad.csv").write_text("file\na.png\n")
    cases.append((("batch", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o5"), "--model-path",
                   str(service_model_dir)), 2, "no 'path' column"))
    for args, want_code, text in cases:
        code, output = run_cli(*args)
        lines = [line for line in output.splitlines() if line.strip()]
        assert code == want_code and len(lines) == 1 and text in lines[0], (args, output)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


@pytest.mark.slow
def test_killed_job_resumes_without_lost_or_duplicated_rows(service_model_dir, mnist_splits, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    n = 4000
    for i in range(n):
        (folder / f"{i:05d}.png").write_bytes(png(mnist_splits.test_x[i]))
    out = tmp_path / "k.parquet"
    cmd = [sys.executable, "-c", "from cnn_ocr.cli import app; app()", "batch", str(folder), "--out", str(out),
           "--model-path", str(service_model_dir), "--workers", "1", "--batch-size", "25", "--chunk-size", "100"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("part-*.parquet"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its pool workers, mid-job
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = rows(out)  # only whole parts are visible
    assert 300 <= len(before) < n and len(before) % 100 == 0
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    paths = [r["path"] for r in rows(out)]
    assert len(paths) == n and set(paths) == {str(folder / f"{i:05d}.png") for i in range(n)}
    assert not list(out.glob(".*.tmp"))
    after = {r["path"]: r for r in rows(out)}
    assert all(after[r["path"]] == r for r in before)  # rows written before the kill are kept as they were


@pytest.mark.slow
def test_ray_engine_gives_the_local_rows(service_model_dir, image_dir, tmp_path):
    folder, _ = image_dir
    common = ("--model-path", str(service_model_dir), "--workers", "2", "--batch-size", "16")
    code, output = run_cli("batch", str(folder), "--out", str(tmp_path / "local"), *common)
    assert code == 0, output
    code, output = run_cli("batch", str(folder), "--out", str(tmp_path / "ray"), "--engine", "ray", *common,
                           "--chunk-size", "20")
    assert code == 0, output
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    assert len(list((tmp_path / "ray").glob("part-*.parquet"))) == 4  # 63 rows, 20 per part


@pytest.mark.slow
def test_batch_benchmark_smoke(mnist_splits, tmp_path):
    from benchmarks import __main__ as bench_cli

    assert bench_cli.main(["batch", "--smoke", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "batch.json").read_text())
    assert data["benchmark"] == "batch" and data["mode"] == "smoke"
    for kind in ("png", "photo"):
        for engine in ("local", "ray"):
            assert data["figures"][kind][engine]["images_per_s"]["median"] > 0
    assert data["figures"]["ray_startup_s"] > 0 and len(data["targets"]) == 4
