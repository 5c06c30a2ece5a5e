"""Test-time augmentation benchmark: the production recipe's seeds, each scored plain and with its probabilities
averaged over a few fixed transformed views of the input (one ONNX graph per variant), side by side in one run;
then the seeds' ensemble (their probabilities averaged, as `ocr ensemble` builds it), plain and with each set of
views.

For every seed and variant: validation accuracy (which chooses), test accuracy (reported only), the paired count
of validation digits the views fix and break against the plain model, and the shipped detector's (MSP) refusals at
a threshold refusing at most `ood.max_digit_refusal` of the validation digits. Each variant's graph is timed at
batch 1 in ONNX Runtime, interleaved with the plain graph, against the production latency target. A variant is
kept only when its mean validation accuracy beats the plain model's within that target; the ensemble's variant
likewise within the selection's latency budget (`select.latency_budget_ms`), against the plain ensemble.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import percentile, summarize, target, time_calls, torch_device, write_result
from benchmarks.recipes import FAMILY, PRODUCTION, _smoke_data_dir, production_models, production_models_dir, recipe_overrides
from benchmarks.recipes import SMOKE as RECIPES_SMOKE
from benchmarks.training import _splits

log = logging.getLogger(__name__)

LATENCY_TARGET_MS = 0.3  # the production model's batch-1 ONNX p50 target beside its 99.70 % test target
ENSEMBLE_TARGET = 99.75  # % test accuracy of the ensemble candidate
# extra views beside the input itself: (dx, dy) pixel shifts (right, down) and rotations in degrees
VIEWS: dict[str, list[tuple[float, float, float]]] = {
    "plain": [],
    "shifts_2": [(1, 0, 0), (-1, 0, 0)],
    "shifts_4": [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0)],
    "rotations_2": [(0, 0, 6), (0, 0, -6)],             # the training jitter's largest rotation
    "rotations_2_wide": [(0, 0, 12), (0, 0, -12)],
    "rotations_4": [(0, 0, 6), (0, 0, -6), (0, 0, 12), (0, 0, -12)],
    "shifts_4_rotations_2": [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 6), (0, 0, -6)],
}
FULL = {"seeds": [1, 2, 3], "slice": None, "overrides": [], "repeats": 5, "calls": 1000}
SMOKE = {"seeds": [0, 1], "slice": RECIPES_SMOKE["slice"], "overrides": RECIPES_SMOKE["overrides"], "repeats": 1,
         "calls": 20}


def tta_net(models: list[Any], views: list[tuple[float, float, float]]) -> Any:
    """`models` and their `views` as one ensemble (`cnn_ocr.models.ensemble`): the log of the softmax averaged
    over the members on the input and its views, as `ocr ensemble` builds it with `ensemble.views`."""
    from cnn_ocr.models.ensemble import Ensemble, with_views

    return Ensemble(with_views(models, views)).eval()


def _probs(net: Any, images: np.ndarray) -> np.ndarray:
    from cnn_ocr.calibration import softmax
    from cnn_ocr.evaluate import class_scores
    from cnn_ocr.preprocess import to_model_input

    return softmax(class_scores(net, to_model_input(images), 1024))


def _score_net(net: Any, params: Any, splits: Any, negatives: np.ndarray, heldout: dict,
               reference_right: np.ndarray | None) -> tuple[dict[str, Any], np.ndarray]:
    """One graph's figures, and which validation digits it gets right; `val_fixed` / `val_broken` count the
    validation digits it gets right / wrong where the reference (None: itself) does not."""
    from cnn_ocr.ood.metrics import fit_threshold, refusal_rate

    val, test = _probs(net, splits.val_x), _probs(net, splits.test_x)
    right = val.argmax(1) == splits.val_y
    threshold = fit_threshold(val.max(1), params.ood.max_digit_refusal)
    row = {"val_accuracy": float(right.mean()), "test_accuracy": float(np.mean(test.argmax(1) == splits.test_y)),
           "refused_test_digits": refusal_rate(test.max(1), threshold),
           "refused_val_negatives": refusal_rate(_probs(net, negatives).max(1), threshold)}
    for family, data in heldout.items():
        row[f"refused_{family}"] = refusal_rate(_probs(net, data.x).max(1), threshold, data.refused_before_model)
    reference = right if reference_right is None else reference_right
    row["val_fixed"] = int(np.sum(right & ~reference))
    row["val_broken"] = int(np.sum(~right & reference))
    return row, right


def _variant_nets(models: list[Any]) -> dict[str, Any]:
    """Every variant of `models` as one graph each, plain first (VIEWS' order)."""
    return {name: tta_net(models, views) for name, views in VIEWS.items()}


def _score_variants(nets: dict[str, Any], params: Any, splits: Any, negatives: np.ndarray,
                    heldout: dict) -> dict[str, Any]:
    """Every variant's figures (`_variant_nets`), paired against the plain variant (the first)."""
    out: dict[str, Any] = {}
    plain_right = None
    for name, net in nets.items():
        out[name], right = _score_net(net, params, splits, negatives, heldout, plain_right)
        if plain_right is None:
            plain_right = right
    return out


def _latency(nets: dict[str, Any], images: np.ndarray, cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Batch-1 ONNX Runtime p50 of every graph in `nets`, all interleaved within each repeat, and the largest
    probability difference between ONNX Runtime and PyTorch on `images` (`check_parity`)."""
    from cnn_ocr.export import check_parity, export_onnx
    from cnn_ocr.onnx_session import make_session

    x1 = np.random.default_rng(0).normal(size=(1, 1, 28, 28)).astype(np.float32)
    sessions, parity = {}, {}
    for i, (name, net) in enumerate(nets.items()):
        path = tmp / f"{i}.onnx"
        export_onnx(net, FAMILY, path)  # the service's graph: "input" -> "logits", dynamic batch
        parity[name] = check_parity(path, net, FAMILY, images, 1.0).max_abs_diff
        sessions[name] = make_session(path, 0)
    p50: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(cfg["repeats"]):
        for name, sess in sessions.items():
            p50[name].append(percentile(time_calls(lambda s=sess: s.run(None, {"input": x1}), cfg["calls"]), 50))
    return {name: {"batch1_p50_ms": summarize(p50[name]), "onnx_parity_max_abs": parity[name]} for name in nets}


def _kept(variants: dict[str, Any], limit_ms: float, key: Any) -> str:
    """The variant with the best validation accuracy (`key` reads it) within `limit_ms`, if it beats plain."""
    fits = [n for n, v in variants.items() if v["batch1_p50_ms"]["median"] <= limit_ms]
    best = max(fits or ["plain"], key=lambda n: key(variants[n]))
    return best if key(variants[best]) > key(variants["plain"]) else "plain"


def _figures(per_seed: dict[int, dict[str, Any]], ensemble: dict[str, Any] | None, latency: dict[str, Any],
             ensemble_budget_ms: float) -> dict[str, Any]:
    variants: dict[str, Any] = {}
    for name in VIEWS:
        rows = [per_seed[s][name] for s in sorted(per_seed)]
        means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        variants[name] = {"views": 1 + len(VIEWS[name]), "per_seed": rows, "mean": means, **latency[name]}
    fig: dict[str, Any] = {"variants": variants, "seeds": sorted(per_seed),
                           "chosen": _kept(variants, LATENCY_TARGET_MS, lambda v: v["mean"]["val_accuracy"]),
                           "latency_target_ms": LATENCY_TARGET_MS}
    if ensemble is not None:  # the seeds' ensemble, each variant one graph of every seed and its views
        members = {name: {"views": 1 + len(VIEWS[name]), **row, **latency[f"ensemble/{name}"]}
                   for name, row in ensemble.items()}
        fig["ensemble"] = {"members": len(per_seed), "variants": members, "latency_budget_ms": ensemble_budget_ms,
                           "chosen": _kept(members, ensemble_budget_ms, lambda v: v["val_accuracy"])}
    return fig


def _targets(fig: dict[str, Any]) -> list[dict[str, Any]]:
    v = fig["variants"][fig["chosen"]]
    n = len(fig["seeds"])
    out = [target(f"test-time augmentation kept on validation ({fig['chosen']}, {v['views']} view(s)): test accuracy, "
                  f"mean of {n} seeds", 100 * v["mean"]["test_accuracy"], 99.70, "%", True),
           target(f"its ONNX batch-1 p50 ({fig['chosen']})", v["batch1_p50_ms"]["median"], LATENCY_TARGET_MS, "ms",
                  False)]
    if "ensemble" in fig:
        ens = fig["ensemble"]
        e = ens["variants"][ens["chosen"]]
        out += [target(f"ensemble of the {n} seeds, views kept on validation ({ens['chosen']}): test accuracy",
                       100 * e["test_accuracy"], ENSEMBLE_TARGET, "%", True),
                target(f"its ONNX batch-1 p50 ({ens['members']} networks x {e['views']} view(s); selection's budget)",
                       e["batch1_p50_ms"]["median"], ens["latency_budget_ms"], "ms", False)]
    return out


def run(smoke: bool = False, out_dir: Path | None = None, model_dir: Path | None = None) -> Path:
    """Score every variant on every seed's production-recipe model (trained into `model_dir`, git-ignored, when
    missing: each in its own spawned process, as the recipe benchmark trains) and write `tta.json`; returns its
    path."""
    import torch

    from benchmarks.common import RESULTS_DIR, core_count
    from cnn_ocr.config import load_params
    from cnn_ocr.data.negatives import ensure_negatives
    from cnn_ocr.models import build
    from cnn_ocr.ood.run import heldout_families

    cfg = SMOKE if smoke else FULL
    out_dir = out_dir or RESULTS_DIR
    overrides = list(cfg["overrides"])
    if smoke:  # its small negatives go to a data folder of its own, as the recipe benchmark's smoke run does
        overrides.append(f"data.processed_dir={_smoke_data_dir(out_dir)}")
    model_dir = model_dir or production_models_dir(out_dir, smoke)
    params = load_params(overrides=recipe_overrides(PRODUCTION, overrides))
    weights = production_models(overrides, cfg["seeds"], cfg["slice"], model_dir)
    torch.set_num_threads(core_count())
    splits = _splits(params.models.improved_cnn.data_version, params, cfg["slice"])
    negatives = ensure_negatives(params.negatives, params.data)["val"].x
    heldout = heldout_families(params.ood.heldout_samples, params.seed)
    per_seed, models = {}, {}
    for seed, file in weights.items():
        log.info("tta benchmark: scoring seed %d", seed)
        model = build(FAMILY, params.models.improved_cnn)
        model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        models[seed] = model.eval()
        nets = _variant_nets([models[seed]])
        per_seed[seed] = _score_variants(nets, params, splits, negatives, heldout)
        if seed == cfg["seeds"][0]:
            timed = dict(nets)  # the first seed's graphs stand for every seed's in the timing
    ensemble = None
    if len(models) > 1:
        log.info("tta benchmark: scoring the ensemble of seeds %s", sorted(models))
        nets = _variant_nets(list(models.values()))
        ensemble = _score_variants(nets, params, splits, negatives, heldout)
        timed.update({f"ensemble/{name}": net for name, net in nets.items()})
    with tempfile.TemporaryDirectory() as tmp:
        latency = _latency(timed, splits.val_x[:64], cfg, Path(tmp))
    fig = _figures(per_seed, ensemble, latency, params.select.latency_budget_ms)
    settings = {"smoke": smoke, "seeds": cfg["seeds"], "slice": cfg["slice"], "recipe": PRODUCTION,
                "overrides": cfg["overrides"], "views": {n: [list(v) for v in vs] for n, vs in VIEWS.items()},
                "repeats": cfg["repeats"], "calls": cfg["calls"], "threads": core_count(),
                "rule": "the variant with the highest mean validation accuracy within the latency target, if it beats plain; "
                        "the ensemble's within the selection's latency budget"}
    return write_result("tta", "smoke" if smoke else "full", fig, _targets(fig), torch_device(), settings, out_dir)
