"""The Open Inference Protocol (v2 REST) endpoints, spoken to by Triton's own HTTP client on a live server."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from live_server import live_server
from tritonclient.utils import InferenceServerException

from cnn_ocr.preprocess import to_model_input

pytestmark = pytest.mark.api
N_DIGITS = 200


@pytest.fixture(scope="module")
def server(service_model_dir, tmp_path_factory):
    """(base URL, spec) of a uvicorn process serving the small test CNN."""
    tmp = tmp_path_factory.mktemp("oip")
    env = {"OCR_MODEL_PATH": str(service_model_dir), "OCR_FEEDBACK_DB": str(tmp / "feedback.db")}
    with live_server(env, tmp / "server.log") as base:
        yield base, json.loads((service_model_dir / "spec.json").read_text())


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(url=server[0].removeprefix("http://"), network_timeout=60) as c:
        yield c


def _infer(client, name: str, x: np.ndarray, binary: bool, input_name: str, datatype: str = "FP32"):
    tensor = triton.InferInput(input_name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    return client.infer(name, [tensor], outputs=outputs, request_id="r-1")


def test_health_and_metadata(client, server):
    spec = server[1]
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("test-cnn") and not client.is_model_ready("other-model")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("test-cnn")
    assert meta["name"] == "test-cnn" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": spec["input_name"], "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_model_metadata("test-cnn", model_version="1")["name"] == "test-cnn"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_reads_real_digits(client, server, mnist_splits, binary):
    x = to_model_input(mnist_splits.test_x[:N_DIGITS])
    result = _infer(client, "test-cnn", x, binary, server[1]["input_name"])
    probs = result.as_numpy("probabilities")
    assert probs.dtype == np.float32 and probs.shape == (N_DIGITS, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    accuracy = float((probs.argmax(axis=1) == mnist_splits.test_y[:N_DIGITS]).mean())
    assert accuracy >= 0.95, accuracy
    response = result.get_response()
    assert response["model_name"] == "test-cnn" and response["model_version"] == "1" and response["id"] == "r-1"
    one = _infer(client, "test-cnn", x[:1], binary, server[1]["input_name"]).as_numpy("probabilities")
    assert np.allclose(one, probs[:1], atol=1e-5)  # a batch of one gives the same answer


def test_all_outputs_when_none_are_named(client, server, mnist_splits):
    x = to_model_input(mnist_splits.test_x[:3])
    tensor = triton.InferInput(server[1]["input_name"], list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("test-cnn", [tensor])  # the client then asks for binary outputs
    assert result.as_numpy("probabilities").argmax(axis=1).tolist() == mnist_splits.test_y[:3].tolist()
    assert result.as_numpy("ood_score") is None  # this model has no ood score


@pytest.fixture(scope="module")
def ood_server(service_model_dir, tmp_path_factory):
    """A server whose model graph also outputs `ood_score` (here: minus the largest logit)."""
    import onnx
    from onnx import helper

    tmp = tmp_path_factory.mktemp("oip-ood")
    folder = tmp / "model"
    folder.mkdir()
    graph = onnx.load(service_model_dir / "model.onnx")
    graph.graph.node.extend([helper.make_node("ReduceMax", ["logits"], ["max_logit"], axes=[1], keepdims=0),
                             helper.make_node("Neg", ["max_logit"], ["ood_score"])])
    graph.graph.output.append(helper.make_tensor_value_info("ood_score", onnx.TensorProto.FLOAT, ["batch"]))
    onnx.checker.check_model(graph)
    onnx.save(graph, folder / "model.onnx")
    spec = json.loads((service_model_dir / "spec.json").read_text())
    spec["model"]["name"] = "ood-cnn"
    (folder / "spec.json").write_text(json.dumps(spec))
    env = {"OCR_MODEL_PATH": str(folder), "OCR_FEEDBACK_DB": str(tmp / "feedback.db")}
    with live_server(env, tmp / "server.log") as base:
        yield base, folder


def test_ood_score_output_when_the_model_has_one(ood_server, mnist_splits):
    import onnxruntime as ort

    base, folder = ood_server
    x = to_model_input(mnist_splits.test_x[:8])
    with triton.InferenceServerClient(url=base.removeprefix("http://")) as client:
        meta = client.get_model_metadata("ood-cnn")
        assert meta["outputs"][1] == {"name": "ood_score", "datatype": "FP32", "shape": [-1]}
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("ood-cnn", [tensor], outputs=[triton.InferRequestedOutput(n, binary_data=b)
                                                            for n, b in (("probabilities", True), ("ood_score", False))])
    logits = ort.InferenceSession(str(folder / "model.onnx")).run(["logits"], {"input": x})[0]
    assert result.as_numpy("ood_score").shape == (8,)
    assert np.allclose(result.as_numpy("ood_score"), -logits.max(axis=1), atol=1e-4)
    assert result.as_numpy("probabilities").argmax(axis=1).tolist() == logits.argmax(axis=1).tolist()


def _error_of(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def test_protocol_errors(client, server, mnist_splits):
    name = server[1]["input_name"]
    x = to_model_input(mnist_splits.test_x[:2])
    cases = [
        (lambda: _infer(client, "no-such-model", x, False, name), "404", "Unknown model"),
        (lambda: _infer(client, "test-cnn", x.reshape(2, 28, 28), False, name), "400", "shape"),
        (lambda: _infer(client, "test-cnn", x.reshape(2, 1, 784, 1), True, name), "400", "shape"),
        (lambda: _infer(client, "test-cnn", x.astype(np.float64), False, name, "FP64"), "400", "FP32"),
        (lambda: _infer(client, "test-cnn", x, False, "pixels"), "400", "Unknown input"),
        (lambda: client.get_model_metadata("no-such-model"), "404", "Unknown model"),
        (lambda: client.get_model_metadata("test-cnn", model_version="9"), "404", "no version"),
    ]
    for call, status, words in cases:
        error = _error_of(call)
        assert error.status() == status and words in error.message(), (status, words, error)
        assert "\n" not in error.message()


def test_malformed_requests_get_one_line_errors(server):
    base, name = server[0], server[1]["input_name"]
    url = f"{base}/v2/models/test-cnn/infer"
    good = {"name": name, "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.0] * 784}
    bodies = [
        (b"not json", "JSON"),
        (json.dumps({"inputs": []}).encode(), "exactly one tensor"),
        (json.dumps({"inputs": [{**good, "data": [0.0] * 783}]}).encode(), "784 values"),
        (json.dumps({"inputs": [{**good, "data": ["a"] * 784}]}).encode(), "list of numbers"),
        (json.dumps({"inputs": [{**good, "data": [1e39] * 784}]}).encode(), "infinite"),  # beyond FP32
        (json.dumps({"inputs": [good], "outputs": [{"name": "logits"}]}).encode(), "Unknown output"),
        (json.dumps({"inputs": [{**good, "shape": [0, 1, 28, 28], "data": []}]}).encode(), "1 <= N"),
        (json.dumps({"inputs": [{**good, "parameters": [1]}]}).encode(), "'parameters' must be"),
        (json.dumps({"inputs": [{**good, "parameters": {"binary_data_size": "3136"}}]}).encode(), "binary data"),
        (json.dumps({"inputs": [{**good, "name": "x" * 5000}]}).encode(), "Unknown input"),
    ]
    for body, words in bodies:
        reply = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
        assert reply.status_code == 400 and set(reply.json()) == {"error"}, reply.text
        assert words in reply.json()["error"] and len(reply.json()["error"]) < 300, (words, reply.text)
    short = httpx.post(url, content=json.dumps({"inputs": [good]}).encode(),
                       headers={HEADER: "99999"}, timeout=30)
    assert short.status_code == 400 and "inference-header-content-length" in short.json()["error"]
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}


HEADER = "Inference-Header-Content-Length"
