"""The served-model format: spec.json round trip, one-line refusals, probabilities, and the registry's local cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnn_ocr import spec as spec_mod
from cnn_ocr.calibration import softmax
from cnn_ocr.model_cache import cached_version, fetch_version
from cnn_ocr.spec import SpecError, build_spec, read_spec, trained_at_from_ms, write_spec

# spec.json exactly as exported models carry it (format 1), with a registry-filled model block.
STORED = {
    "format_version": 1, "input_name": "input", "output_name": "logits", "labels": list(range(10)),
    "temperature": 1.37068,
    "preprocessing": {"image_size": 28, "layout": "NCHW", "ink": "white-on-black", "scale": 1 / 255.0,
                      "mean": 0.1307, "std": 0.3081,
                      "recipe": "crop to ink, longer side to 20 px, centre of mass at (14, 14) in 28x28"},
    "model": {"name": "OCR-Production-Model", "version": 3, "family": "improved_cnn", "run_id": "abc123",
              "alias": "production", "test_accuracy": 0.991, "data_version": "v2.0",
              "trained_at": "2026-11-26T14:03:12+00:00"},
}


def linear_graph(folder: Path, weights: np.ndarray, output: str = "logits") -> Path:
    """A real ONNX graph: flatten the (N, 1, 28, 28) input and multiply by `weights` (784, 10)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(weights.astype(np.float32), "W"),
             numpy_helper.from_array(np.array([-1, 784], np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W"], [output])]
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / spec_mod.ONNX_FILE)
    return folder


def session(folder: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(folder / spec_mod.ONNX_FILE), providers=["CPUExecutionProvider"])


def test_write_then_read_round_trips(tmp_path):
    written = build_spec(1.25, {"name": "m", "version": "4", "family": "base_cnn", "ignored": "x"})
    path = write_spec(tmp_path, written)
    assert path == tmp_path / "spec.json" and [p.name for p in tmp_path.iterdir()] == ["spec.json"]
    back = read_spec(tmp_path)
    assert back == written and back.temperature == 1.25 and back.model.version == "4"
    on_disk = json.loads(path.read_text())
    assert set(on_disk) == set(STORED) and set(on_disk["model"]) == set(STORED["model"])
    assert on_disk["model"]["name"] == "m" and on_disk["model"]["run_id"] is None
    assert path.read_text() == json.dumps(on_disk, indent=2, sort_keys=True) + "\n"


def test_a_stored_spec_reads_and_writes_back_unchanged(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(STORED))
    read = read_spec(tmp_path)
    assert read.to_dict() == STORED
    assert (read.model.alias, read.model.version, read.temperature) == ("production", 3, 1.37068)
    moved = read.with_model(version=4, alias="challenger")
    assert moved.model.version == 4 and moved.model.run_id == "abc123" and read.model.version == 3


def _broken(**changes):
    data = json.loads(json.dumps(STORED))
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


_DROP = object()
BROKEN = {
    "not JSON": ("{\"format_version\": 1,", "is not valid JSON"),
    "a list": ("[1, 2]", "not a JSON object"),
    "no temperature": (_broken(temperature=_DROP), "lacks temperature"),
    "no labels or names": (_broken(labels=_DROP, input_name=_DROP), "lacks input_name, labels"),
    "format 2": (_broken(format_version=2), "format_version 2"),
    "labels 1..10": (_broken(labels=list(range(1, 11))), "labels must be"),
    "zero temperature": (_broken(temperature=0), "temperature must be a positive number"),
    "string temperature": (_broken(temperature="1.0"), "temperature must be a positive number"),
    "NaN temperature": (_broken(temperature=float("nan")), "temperature must be a positive number"),
    "boolean temperature": (_broken(temperature=True), "temperature must be a positive number"),
    "empty output name": (_broken(output_name=""), "output_name must be a non-empty string"),
    "other normalization": (_broken(preprocessing={**STORED["preprocessing"], "mean": 0.5}),
                            "expects different preprocessing"),
    "model block a list": (_broken(model=[1]), "\"model\" must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_or_incompatible_spec_is_one_line_naming_the_file(case, tmp_path):
    text, expected = BROKEN[case]
    (tmp_path / "spec.json").write_text(text)
    with pytest.raises(SpecError) as err:
        read_spec(tmp_path)
    message = str(err.value)
    assert expected in message and str(tmp_path / "spec.json") in message
    assert "\n" not in message and ("ocr export" in message or "retrain" in message)


def test_a_missing_spec_says_what_a_model_folder_needs(tmp_path):
    with pytest.raises(SpecError, match=r"does not exist; a model folder needs model\.onnx \+ spec\.json") as err:
        read_spec(tmp_path)
    assert "\n" not in str(err.value)
    assert not spec_mod.is_model_folder(tmp_path)


def test_service_refuses_a_broken_spec_with_the_same_line(tmp_path):
    from app.model_store import ModelLoadError, load_model_dir

    folder = linear_graph(tmp_path / "m", np.zeros((784, 10)))
    (folder / "spec.json").write_text(_broken(temperature=-2))
    with pytest.raises(ModelLoadError, match="temperature must be a positive number, got -2") as err:
        load_model_dir(folder, threads=1, source="test")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.7])
def test_spec_probabilities_are_the_calibration_softmax(temperature):
    logits = np.random.default_rng(1).normal(0, 5, (64, 10)).astype(np.float32)
    got = build_spec(temperature, {}).probabilities(logits)
    np.testing.assert_array_equal(got, softmax(logits, temperature))
    assert got.dtype == np.float64 and np.allclose(got.sum(1), 1.0)
    assert not np.allclose(got, softmax(logits, temperature * 2))  # the temperature is really applied


def test_predict_runs_the_graph_as_the_spec_names_it(tmp_path):
    from cnn_ocr.preprocess import to_model_input

    rng = np.random.default_rng(2)
    weights = rng.normal(0, 0.05, (784, 10))
    folder = linear_graph(tmp_path / "m", weights)
    spec = build_spec(1.7, {})
    images = rng.integers(0, 256, (700, 28, 28)).astype(np.uint8)  # more than one inference batch of 512
    got = spec.predict(session(folder), images)
    logits = to_model_input(images).reshape(len(images), -1) @ weights.astype(np.float32)
    np.testing.assert_allclose(got, softmax(logits, 1.7), atol=1e-6)
    np.testing.assert_allclose(spec.predict(session(folder), images[:3]), got[:3], atol=1e-7)


def test_a_graph_without_the_named_output_is_refused(tmp_path):
    folder = linear_graph(tmp_path / "m", np.zeros((784, 10)), output="scores")
    with pytest.raises(SpecError, match=r"outputs \['scores'\], spec names 'input' / 'logits'"):
        build_spec(1.0, {}).check_session(session(folder), "m/model.onnx")


def test_registry_version_is_cached_with_a_pointer_the_cache_follows(tmp_path, tracking_uri):
    from cnn_ocr import registry
    from cnn_ocr.tracking.runs import tracked_run
    from cnn_ocr.tracking.writing import log_artifacts

    folder = linear_graph(tmp_path / "export", np.eye(784, 10))
    write_spec(folder, build_spec(1.0, {"family": "base_cnn"}))
    with tracked_run("spec-test") as run:
        run_id = run.info.run_id
    log_artifacts(run_id, folder, registry.ONNX_ARTIFACT_DIR)
    info = registry.create_version("Spec Test+Model", run_id, {"family": "base_cnn"})
    registry.move_alias("Spec Test+Model", "production", info.version, action="promote", why="spec test")

    cache = tmp_path / "cache"
    assert cached_version(cache, "Spec Test+Model", "production") is None
    got = fetch_version(cache, "Spec Test+Model", "production", timeout_s=5)
    assert got.folder == cache / "Spec_Test_Model" / str(info.version) and got.version == str(info.version)
    assert got.source == f"registry models:/Spec Test+Model@production (version {info.version})"
    served = read_spec(got.folder)
    assert served.model.version == info.version and served.model.run_id == run_id and served.model.family == "base_cnn"
    from cnn_ocr.tracking.reading import get_run

    assert served.model.trained_at == trained_at_from_ms(get_run(run_id).start_time)  # an older spec: from the run
    assert (got.folder / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()
    stamp = (got.folder / "spec.json").stat().st_mtime_ns
    assert fetch_version(cache, "Spec Test+Model", "production", timeout_s=5).folder == got.folder
    assert (got.folder / "spec.json").stat().st_mtime_ns == stamp  # a cached version is not fetched again

    cached = cached_version(cache, "Spec Test+Model", "production")
    assert cached is not None and cached.folder == got.folder and cached.source == f"local cache {got.folder}"
    (got.folder / "model.onnx").unlink()
    assert cached_version(cache, "Spec Test+Model", "production") is None  # a half-present folder is not served
    (cache / "Spec_Test_Model" / "production.alias.json").write_text("{not json")
    assert cached_version(cache, "Spec Test+Model", "production") is None
