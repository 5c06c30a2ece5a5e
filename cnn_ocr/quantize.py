"""Int8 quantization of an exported CNN (ONNX Runtime's static QDQ quantizer).

The int8 graph is a static, per-channel QDQ quantization calibrated on real (normalized) images; it keeps
the exported model's contract ("input" float32 (N, 1, 28, 28) -> "logits" float32 (N, 10)).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class _Calibration:
    """Feeds calibration batches to ONNX Runtime's quantizer."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int = 64) -> None:
        self._batches = iter([{input_name: images[i : i + batch]} for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(src: Path, dest: Path, calibration: np.ndarray, input_name: str = "input") -> Path:
    """Write a static int8 (QDQ, per-channel weights) copy of the ONNX model at `src` to `dest`.

    `calibration`: float32 (N, 1, 28, 28) images exactly as the model sees them (a few hundred suffice).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(dest), _Calibration(input_name, np.ascontiguousarray(calibration, dtype=np.float32)),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
    log.info("int8 model written to %s (%d -> %d bytes)", dest, Path(src).stat().st_size, Path(dest).stat().st_size)
    return Path(dest)
