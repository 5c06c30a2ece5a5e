"""The photo benchmark in smoke mode: it runs end to end and writes a well-formed result."""

from __future__ import annotations

import json

import pytest

from benchmarks import __main__ as bench_cli


@pytest.mark.model
def test_photos_benchmark_smoke(mnist_splits, service_model_dir, tmp_path):
    assert bench_cli.main(["photos", "--smoke", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "photos.json").read_text())
    assert data["mode"] == "smoke" and data["benchmark"] == "photos"
    figures = data["figures"]
    assert set(figures["photos"]) == {"digits", "numbers", "touching", "heldout", "pages"}
    for row in [*figures["photos"].values(), *figures["strings"].values(), figures["clean_strips_whole_string"]]:
        assert row["n"] >= 1 and 0 <= row["segmentation"] <= 1
    assert figures["latency"]["read_12mp_jpeg_ms"]["p50"] > 0
    names = [t["name"] for t in data["targets"]]
    assert "/read on a 12 MP JPEG, p50" in names and "one digit per photo" in names
    assert "page of 3-5 numbers: every number right" in names
