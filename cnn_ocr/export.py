"""Export a trained model to one self-contained ONNX file plus `spec.json`, and prove it matches.

The folder format (file names, graph input/output names, `spec.json`, logits -> probabilities) is defined in
`cnn_ocr.spec`. For the CNNs the temperature is fit on the validation split (minimum negative log-likelihood).
The SVM is already calibrated, so its graph returns log-probabilities as "logits" and its temperature is 1.

Before a folder is written, a parity check runs ONNX Runtime and the training framework on test images:
probabilities must agree within a tolerance and predictions must be identical, else `ExportError`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_ocr import families
from cnn_ocr.atomic_files import atomic_dir
from cnn_ocr.calibration import fit_temperature, nll
from cnn_ocr.preprocess import IMAGE_SIZE, to_model_input
from cnn_ocr.spec import (
    INPUT_NAME,
    ONNX_FILE,
    OOD_OUTPUT_NAME,
    OUTPUT_NAME,
    OodBlock,
    build_spec,
    graph_outputs,
    probabilities,
    write_spec,
)

log = logging.getLogger(__name__)

OPSET = 17
CNN_FAMILIES = families.names("torch")
SKLEARN_FAMILIES = families.names("sklearn")
_BATCH = 512


class ExportError(RuntimeError):
    """The model could not be exported, or the exported graph does not match the framework."""


@dataclass(frozen=True)
class ParityReport:
    """Outcome of comparing ONNX Runtime with the training framework on the same images."""

    n_images: int
    max_abs_diff: float
    mismatched_predictions: int
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.mismatched_predictions == 0


@dataclass(frozen=True)
class ExportResult:
    """Where the exported files are, the temperature used and the parity evidence."""

    folder: Path
    temperature: float
    parity: ParityReport
    val_nll_before: float
    val_nll_after: float
    ood: OodBlock | None = None  # the detector and threshold written into spec.json


def framework_logits(model: Any, family: str, images: np.ndarray) -> np.ndarray:
    """The framework's logits for uint8 images (N, 28, 28); log-probabilities for the SVM."""
    x = to_model_input(images)
    if family in SKLEARN_FAMILIES:
        proba = model.predict_proba(x.reshape(len(x), -1))
        return np.log(np.clip(proba, 1e-300, None))
    import torch

    net = _cpu_eval_copy(model)
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), _BATCH):
            outs.append(net(torch.from_numpy(x[start : start + _BATCH])).numpy())
    return np.concatenate(outs).astype(np.float32)


def framework_probabilities(model: Any, family: str, images: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities the framework itself gives (the SVM's own calibrated `predict_proba`)."""
    if family in SKLEARN_FAMILIES:
        x = to_model_input(images)
        return np.asarray(model.predict_proba(x.reshape(len(x), -1)), dtype=np.float64)
    return probabilities(framework_logits(model, family, images), temperature)


def _cpu_eval_copy(model: Any) -> Any:
    import copy

    return copy.deepcopy(model).to("cpu").eval()


def export_onnx(model: Any, family: str, path: Path, detector: Any = None) -> Path:
    """Write the model as one ONNX file (opset 17, dynamic batch axis, "input" -> "logits"); with a
    `cnn_ocr.ood.graph.Detector`, the graph also outputs its not-a-digit score ("ood_score"; the SVM: msp)."""
    path = Path(path)
    if family in CNN_FAMILIES:
        _export_torch(model, path, detector)
    elif family in SKLEARN_FAMILIES:
        from cnn_ocr.export_sklearn import sklearn_to_onnx

        try:
            graph = sklearn_to_onnx(model, INPUT_NAME, OUTPUT_NAME, OPSET)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        if detector is not None:  # the MSP of its calibrated probabilities (its "logits" are log-probabilities)
            from cnn_ocr.ood.graph import with_msp_output

            graph = with_msp_output(graph, OUTPUT_NAME, OOD_OUTPUT_NAME)
        path.write_bytes(graph.SerializeToString())
    else:
        raise ExportError(f"unknown model family {family!r}; expected one of {CNN_FAMILIES + SKLEARN_FAMILIES}")
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    return path


def _export_torch(model: Any, path: Path, detector: Any = None) -> None:
    import torch

    net = _cpu_eval_copy(model)
    outputs = [OUTPUT_NAME]
    if detector is not None:
        from cnn_ocr.ood.graph import scored_net

        net, outputs = scored_net(net, detector), [OUTPUT_NAME, OOD_OUTPUT_NAME]
    dummy = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose: it writes one self-contained file and needs no onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *outputs)},
            opset_version=OPSET,
            dynamo=False,
        )
    if path.with_name(path.name + ".data").exists():
        raise ExportError(f"{path} was written with external weights; expected one self-contained file")


def onnx_probabilities(onnx_path: Path, images: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities from ONNX Runtime exactly as a server computes them: its session, the spec's softmax."""
    from cnn_ocr.onnx_session import make_session

    return probabilities(graph_outputs(make_session(onnx_path), images, batch=_BATCH), temperature)


def check_parity(
    onnx_path: Path, model: Any, family: str, images: np.ndarray, temperature: float, tolerance: float = 1e-4
) -> ParityReport:
    """Compare ONNX Runtime with the framework on `images`; raise `ExportError` unless they agree."""
    ours = onnx_probabilities(onnx_path, images, temperature)
    theirs = framework_probabilities(model, family, images, temperature)
    report = ParityReport(
        n_images=len(images),
        max_abs_diff=float(np.abs(ours - theirs).max()),
        mismatched_predictions=int((ours.argmax(1) != theirs.argmax(1)).sum()),
        tolerance=tolerance,
    )
    if not report.ok:
        raise ExportError(
            f"ONNX parity failed on {report.n_images} images: max |p_onnx - p_{family}| = "
            f"{report.max_abs_diff:.2e} (tolerance {tolerance:.0e}), "
            f"{report.mismatched_predictions} different predictions"
        )
    log.info("ONNX parity ok on %d images (max abs diff %.2e)", report.n_images, report.max_abs_diff)
    return report


def export_model(
    model: Any,
    family: str,
    *,
    val: tuple[np.ndarray, np.ndarray],
    test_images: np.ndarray,
    dest: Path,
    model_block: dict[str, Any],
    tolerance: float = 1e-4,
    detector: Any = None,
    max_digit_refusal: float | None = None,
) -> ExportResult:
    """Export, calibrate (CNNs) and parity-check a model; `dest` holds model.onnx + spec.json only on success.

    With a `cnn_ocr.ood.graph.Detector` the graph also outputs the not-a-digit score, checked against the
    framework's, and the spec records the detector, its threshold and the output's name. With
    `max_digit_refusal` the threshold is fitted on the exported graph's scores of the validation digits (it
    refuses at most that share of them); without it the detector's own threshold is kept."""
    val_x, val_y = val
    val_logits = framework_logits(model, family, val_x)
    before = nll(val_logits, val_y)
    temperature = 1.0 if family in SKLEARN_FAMILIES else fit_temperature(val_logits, val_y)
    after = nll(val_logits, val_y, temperature)
    log.info("temperature %.4f (validation NLL %.4f -> %.4f)", temperature, before, after)
    with atomic_dir(Path(dest)) as tmp:
        onnx_path = export_onnx(model, family, tmp / ONNX_FILE, detector)
        parity = check_parity(onnx_path, model, family, test_images, temperature, tolerance)
        ood = None if detector is None else _ood_block(onnx_path, model, family, detector, test_images, val_x,
                                                       tolerance, max_digit_refusal)
        write_spec(tmp, build_spec(temperature, {**model_block, "family": family}, ood))
    return ExportResult(Path(dest), temperature, parity, before, after, ood)


def _ood_block(onnx_path: Path, model: Any, family: str, detector: Any, test_images: np.ndarray,
               val_x: np.ndarray, tolerance: float, max_digit_refusal: float | None) -> OodBlock:
    """Check the graph's score against the framework's, fit the threshold if asked; the spec's "ood" block."""
    from cnn_ocr.ood.graph import onnx_scores, score_parity
    from cnn_ocr.ood.metrics import fit_threshold

    worst = score_parity(onnx_path, model, detector, test_images, family)
    if worst > tolerance:
        raise ExportError(f"ONNX parity failed for the {detector.name} score on {len(test_images)} images: "
                          f"relative difference {worst:.2e} (tolerance {tolerance:.0e})")
    threshold = detector.threshold
    if max_digit_refusal is not None:
        threshold = fit_threshold(onnx_scores(onnx_path, val_x), max_digit_refusal)
        log.info("%s threshold %.6g refuses at most %.2f%% of %d validation digits", detector.name, threshold,
                 100 * max_digit_refusal, len(val_x))
    return OodBlock(detector.name, threshold, OOD_OUTPUT_NAME)
