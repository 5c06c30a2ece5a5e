"""`ocr crnn train`: the line recognizer (CRNN + CTC) on synthetic strings, exported to ONNX, tracked."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from cnn_ocr.cli.common import (
    ParamsOpt,
    SetOpt,
    console,
    one_line_errors,
    params_or_fail,
    setup_logging,
    write_metrics,
)

crnn_app = typer.Typer(help="The segmentation-free line recognizer.", no_args_is_help=True)
EXPERIMENT = "line-recognizer"
EVAL_STRINGS = 500
PARITY_LINES = 32


@crnn_app.command()
def train(
    metrics_out: Annotated[Path | None, typer.Option("--metrics-out", help="Write the metrics as JSON.")] = None,
    register_it: Annotated[bool, typer.Option("--register/--no-register", help="Register the exported "
                                              "recognizer (`crnn.registered_model`) when done.")] = True,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Train on strings of MNIST training digits, score on strings of test digits, export to ONNX, register."""
    import numpy as np

    from cnn_ocr.data import load_version
    from cnn_ocr.fit.ctc_loop import synthetic_strings, train_crnn
    from cnn_ocr.line_model import LineRecognizer, export_line_model
    from cnn_ocr.tracking.runs import last_run_id, tracked_run
    from cnn_ocr.tracking.store import configure
    from cnn_ocr.tracking.writing import log_artifact, log_metrics, log_params

    setup_logging()
    p = params_or_fail(params, set_)
    with one_line_errors():
        splits = load_version("v2.0", p.data)
        configure()
        with tracked_run(EXPERIMENT, run_name="crnn") as run:
            log_params({f"crnn.{k}": v for k, v in p.crnn.model_dump(mode="json").items()})
            start = time.perf_counter()
            model, losses = train_crnn(p.crnn, splits.train_x, splits.train_y)
            held = synthetic_strings(splits.test_x, splits.test_y, EVAL_STRINGS, p.crnn.max_digits,
                                     np.random.default_rng(p.crnn.seed + 1))
            spec = export_line_model(model, p.crnn.out_dir, held.images[:PARITY_LINES], p.crnn.parity_tolerance)
            acc = _string_accuracy(LineRecognizer(p.crnn.out_dir), held.images, held.texts)
            metrics = {"test_string_accuracy": acc, "final_ctc_loss": float(np.mean(losses[-50:])),
                       "train_seconds": time.perf_counter() - start,
                       "parity_max_abs_diff": spec["parity_max_abs_diff"]}
            spec.update(metrics)
            (Path(p.crnn.out_dir) / "line_spec.json").write_text(json.dumps(spec, indent=1))
            log_metrics(metrics)
            log_artifact(Path(p.crnn.out_dir) / "model.onnx", "onnx")
            log_artifact(Path(p.crnn.out_dir) / "line_spec.json", "onnx")
        if register_it:
            _register(last_run_id() or run.info.run_id, p.crnn.registered_model, spec, p.crnn.parity_tolerance)
    if metrics_out:
        write_metrics(metrics_out, metrics)
    console.print(f"line recognizer: {acc:.1%} of {EVAL_STRINGS} test strings read exactly; "
                  f"ONNX parity {spec['parity_max_abs_diff']:.1e}; written to {p.crnn.out_dir}")


@crnn_app.command("register")
def register_cmd(
    run_id: Annotated[str, typer.Argument(help="A `line-recognizer` run of `ocr crnn train`.")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Register a trained recognizer's ONNX folder as a new version; `production` when its parity holds."""
    from cnn_ocr.tracking.store import configure

    setup_logging()
    p = params_or_fail(params, set_)
    with one_line_errors():
        configure()
        spec = _run_spec(run_id)
        _register(run_id, p.crnn.registered_model, spec, p.crnn.parity_tolerance)


def _run_spec(run_id: str) -> dict:
    """The `line_spec.json` a training run logged (its parity and scores)."""
    from cnn_ocr.line_model import SPEC_FILE
    from cnn_ocr.registry import RegistryError
    from cnn_ocr.tracking.reading import load_run_dict

    try:
        return load_run_dict(run_id, f"onnx/{SPEC_FILE}")
    except Exception as exc:  # the store raises several types for a missing run or artifact
        raise RegistryError(f"run {run_id} holds no onnx/{SPEC_FILE} ({type(exc).__name__}); give the id of an "
                            "`ocr crnn train` run (MLflow experiment line-recognizer)") from None


def _register(run_id: str, name: str, spec: dict, tolerance: float) -> None:
    from cnn_ocr.line_registry import register_recognizer

    done = register_recognizer(name, run_id, spec, tolerance)
    where = "now production" if done.promoted else "not promoted"
    console.print(f"registered {name} v{done.version.version} from run {run_id}: {where} ({done.why})")


def _string_accuracy(reader, images: list, texts: list[str]) -> float:
    """Share of the lines the exported recognizer reads exactly (greedy CTC)."""
    from cnn_ocr.fit.ctc_loop import string_accuracy
    from cnn_ocr.lines import greedy_decode

    read = ["".join(str(d) for d, _, _ in greedy_decode(q)) for q in reader.frame_probabilities(images)]
    return string_accuracy(texts, read)


def register(app: typer.Typer) -> None:
    """Add `crnn` to the `ocr` command."""
    app.add_typer(crnn_app, name="crnn")
