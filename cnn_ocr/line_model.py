"""The line recognizer as a shipped model: ONNX export with a parity check, and reading lines with it.

A folder holds `model.onnx` ("input" (N, 1, 32, W) -> "logits" (N, W/4, 11)) and `line_spec.json` (what the
input is, the CTC blank, the parity measured at export and the string accuracy on test strings). Serving
needs only ONNX Runtime: `LineRecognizer` turns a line's ink into digits with boxes and confidences.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cnn_ocr.lines import (
    BLANK,
    INK_HEIGHT,
    LINE_HEIGHT,
    SIDE_PAD,
    STRIDE,
    LineDigit,
    digits_with_boxes,
    line_input,
    to_network,
)
from cnn_ocr.onnx_session import make_session

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "input", "logits"
OPSET = 17
SPEC_FILE = "line_spec.json"


class ExportParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance."""


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def export_line_model(model: Any, folder: Path, check_lines: list[np.ndarray], tolerance: float,
                      extra: dict | None = None) -> dict:
    """Write model.onnx + line_spec.json; the ONNX graph must match PyTorch on `check_lines`."""
    import torch

    from cnn_ocr.fit.ctc_loop import frame_probabilities

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(2, 1, LINE_HEIGHT, 64),), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch", 3: "width"}, OUTPUT_NAME: {0: "batch", 1: "frames"}})
    torch_probs = frame_probabilities(model, check_lines)
    onnx_probs = LineRecognizer(folder, threads=1, check_spec=False).frame_probabilities(check_lines)
    gap = max(float(np.abs(a - b).max()) for a, b in zip(torch_probs, onnx_probs, strict=True))
    if gap > tolerance:
        raise ExportParityError(f"ONNX Runtime differs from PyTorch by {gap:.2e} (> {tolerance:.0e})")
    spec = {"kind": "line_recognizer", "input": {"height": LINE_HEIGHT, "ink_height": INK_HEIGHT,
                                                 "side_pad": SIDE_PAD, "stride": STRIDE, "blank": BLANK,
                                                 "ink": "white-on-black"},
            "parity_max_abs_diff": gap, "parity_lines": len(check_lines), **(extra or {})}
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=1))
    return spec


class LineRecognizer:
    """An exported line recognizer on ONNX Runtime."""

    def __init__(self, folder: Path, threads: int = 1, check_spec: bool = True) -> None:
        folder = Path(folder)
        if check_spec:
            spec = json.loads((folder / SPEC_FILE).read_text())
            if spec.get("kind") != "line_recognizer" or spec["input"]["height"] != LINE_HEIGHT:
                raise ValueError(f"{folder} does not hold a line recognizer of this version")
        self.session = make_session(folder / "model.onnx", threads)

    def frame_probabilities(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per-line softmax frames (T_i, 11) for line inputs of any widths."""
        if not images:
            return []
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: to_network(images)})[0]
        return [_softmax(logits[i, :img.shape[1] // STRIDE]) for i, img in enumerate(images)]

    def read(self, ink: np.ndarray, scale: float = 1.0) -> list[LineDigit]:
        """The digits of one line of ink (light on black), with boxes in the source's pixels times `scale`."""
        line = line_input(ink)
        if line is None:
            return []
        probs = self.frame_probabilities([line.image])[0]
        return digits_with_boxes(probs, line, ink, scale)
