"""The calibrated SVM (`cnn_ocr.models.svm.CalibratedSVM`) written as plain ONNX operators.

The graph mirrors scikit-learn step by step: flatten, scaler and PCA in float32 (as scikit-learn computes
them for float32 input), then the SVC kernel, the one-vs-one decision values and their one-vs-rest
aggregation in float64 (as libsvm does), and finally log-softmax(scores / temperature). Working in float64
keeps the one-vs-one votes identical to libsvm's, so predictions match exactly.
Only standard ONNX operators are used (no ai.onnx.ml), so any ONNX Runtime build can run it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_F32, _F64 = np.float32, np.float64


class _Graph:
    """A tiny builder: constants become initializers, nodes get unique output names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, value: np.ndarray, dtype: Any) -> str:
        from onnx import numpy_helper

        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        out = out or f"t{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"n{self._n}_{op_type}", **attrs))
        return out


def _scaler(g: _Graph, x: str, step: Any) -> str:
    name = type(step).__name__
    if name == "StandardScaler":
        if step.mean_ is not None:
            x = g.op("Sub", x, g.const(step.mean_, _F32))
        if step.scale_ is not None:
            x = g.op("Div", x, g.const(step.scale_, _F32))
        return x
    if name == "MinMaxScaler":
        return g.op("Add", g.op("Mul", x, g.const(step.scale_, _F32)), g.const(step.min_, _F32))
    raise ValueError(f"cannot export pipeline step {name}")


def _pca(g: _Graph, x: str, pca: Any) -> str:
    comp_t = np.asarray(pca.components_).T
    x = g.op("MatMul", x, g.const(comp_t, _F32))
    x = g.op("Sub", x, g.const(np.asarray(pca.mean_)[None] @ comp_t, _F32))
    if pca.whiten:
        scale = np.sqrt(np.asarray(pca.explained_variance_))
        scale[scale < np.finfo(scale.dtype).eps] = np.finfo(scale.dtype).eps
        x = g.op("Div", x, g.const(scale, _F32))
    return x


def _kernel(g: _Graph, x: str, svc: Any) -> str:
    """(N, F) float64 -> kernel matrix (N, n_SV) against the support vectors."""
    sv = np.asarray(svc.support_vectors_, dtype=_F64)
    # Support vectors come from float32 features, so float32 storage is exact and halves the file.
    exact32 = np.array_equal(sv.astype(_F32).astype(_F64), sv)
    sv_t = g.op("Cast", g.const(sv.T, _F32), to=11) if exact32 else g.const(sv.T, _F64)
    dot = g.op("MatMul", x, sv_t)
    gamma = float(svc._gamma)
    if svc.kernel == "linear":
        return dot
    if svc.kernel == "rbf":
        x_sq = g.op("ReduceSum", g.op("Mul", x, x), g.const(np.array([1]), np.int64), keepdims=1)
        sv_sq = g.const((sv * sv).sum(axis=1)[None], _F64)
        dist = g.op("Add", g.op("Sub", x_sq, g.op("Mul", dot, g.const(2.0, _F64))), sv_sq)
        return g.op("Exp", g.op("Mul", dist, g.const(-gamma, _F64)))
    lin = g.op("Add", g.op("Mul", dot, g.const(gamma, _F64)), g.const(float(svc.coef0), _F64))
    if svc.kernel == "poly":
        return g.op("Pow", lin, g.const(float(svc.degree), _F64))
    if svc.kernel == "sigmoid":
        return g.op("Tanh", lin)
    raise ValueError(f"cannot export SVC kernel {svc.kernel!r}")


def _ovo_matrices(svc: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weights (n_SV, P) so that decision = K @ W + b, and the class incidence of each pair (P, C) x 2."""
    n_classes = len(svc.classes_)
    starts = np.concatenate([[0], np.cumsum(svc.n_support_)])
    coef = np.asarray(svc.dual_coef_, dtype=_F64)
    pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
    w = np.zeros((coef.shape[1], len(pairs)))
    first = np.zeros((len(pairs), n_classes))
    second = np.zeros((len(pairs), n_classes))
    for p, (i, j) in enumerate(pairs):
        w[starts[i] : starts[i + 1], p] = coef[j - 1, starts[i] : starts[i + 1]]
        w[starts[j] : starts[j + 1], p] = coef[i, starts[j] : starts[j + 1]]
        first[p, i] = second[p, j] = 1.0
    return w, np.asarray(svc.intercept_, dtype=_F64), first, second


def _ovr_scores(g: _Graph, kmat: str, svc: Any) -> str:
    """scikit-learn's `_ovr_decision_function`: votes plus squashed summed confidences."""
    w, b, first, second = _ovo_matrices(svc)
    dec = g.op("Add", g.op("MatMul", kmat, g.const(w, _F64)), g.const(b, _F64))
    wins_first = g.op("Cast", g.op("GreaterOrEqual", dec, g.const(0.0, _F64)), to=11)
    wins_second = g.op("Sub", g.const(1.0, _F64), wins_first)
    votes = g.op("Add", g.op("MatMul", wins_first, g.const(first, _F64)),
                 g.op("MatMul", wins_second, g.const(second, _F64)))
    conf = g.op("MatMul", dec, g.const(first - second, _F64))
    denom = g.op("Mul", g.op("Add", g.op("Abs", conf), g.const(1.0, _F64)), g.const(3.0, _F64))
    return g.op("Add", votes, g.op("Div", conf, denom))


def _check_supported(model: Any) -> tuple[list[Any], Any]:
    pipeline = getattr(model, "pipeline", None)
    if pipeline is None or not hasattr(model, "temperature"):
        raise ValueError(f"cannot export {type(model).__name__}: expected a CalibratedSVM (pipeline + temperature)")
    steps = [step for _, step in pipeline.steps if step not in (None, "passthrough")]
    svc = steps[-1]
    if getattr(pipeline, "n_features_in_", 28 * 28) != 28 * 28:
        raise ValueError(f"cannot export a pipeline fitted on {pipeline.n_features_in_} features; expected 784")
    if type(svc).__name__ != "SVC":
        raise ValueError(f"cannot export a pipeline ending in {type(svc).__name__}; expected SVC")
    if len(svc.classes_) < 3 or svc.decision_function_shape != "ovr" or not np.array_equal(
        svc.classes_, np.arange(len(svc.classes_))
    ):
        raise ValueError("cannot export this SVC: expected one-vs-rest scores over classes 0..9")
    return steps[:-1], svc


def sklearn_to_onnx(model: Any, input_name: str, output_name: str, opset: int) -> Any:
    """Build the ONNX model: float32 (N, 1, 28, 28) `input_name` -> float32 (N, 10) log-probabilities."""
    from onnx import TensorProto, helper

    transforms, svc = _check_supported(model)
    g = _Graph()
    x = g.op("Reshape", input_name, g.const(np.array([-1, 28 * 28]), np.int64))
    for step in transforms:
        x = _pca(g, x, step) if type(step).__name__ == "PCA" else _scaler(g, x, step)
    scores = _ovr_scores(g, _kernel(g, g.op("Cast", x, to=11), svc), svc)
    scaled = g.op("Div", scores, g.const(float(model.temperature), _F64))
    g.op("Cast", g.op("LogSoftmax", scaled, axis=1), to=1, out=output_name)
    n_classes = len(svc.classes_)
    graph = helper.make_graph(
        g.nodes,
        "calibrated_svm",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", n_classes])],
        g.inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="cnn_ocr")
    onnx_model.ir_version = 8
    return onnx_model
