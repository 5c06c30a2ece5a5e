"""Training-step benchmark: what one step of the production recipe costs on this machine, and what the loop's speed
options would change.

The production network (`params.models.improved_cnn`) trains with the project's own epoch loop
(`cnn_ocr.fit.torch_loop._train_epoch`: the batch's random resampling, its negatives, the outlier-exposure loss,
Adam and the one-cycle schedule) on real digits and negatives, under each variant in turn, rounds interleaved so
that a shared machine's load falls on all of them alike:

- `production`: as `ocr train` runs it (channels-last weights, deterministic kernels, fp32, eager);
- `nondeterministic`: the same without `torch.use_deterministic_algorithms` (runs no longer reproduce bit for bit);
- `contiguous`: the weights in the default memory layout instead of channels-last;
- `compiled`: the network under `torch.compile` (TorchInductor; its compilation excluded from the timing).

Each variant's median milliseconds per step project the improved CNN's training stage (steps per epoch x epochs
of the recipe, validation excluded) against the main job's 30-minute budget, and, with the other stages' times of
the latest main-job benchmark (`mainjob.json`), the whole main job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from benchmarks.common import summarize, target, torch_device, write_result

log = logging.getLogger(__name__)

MAINJOB_BUDGET_S = 30 * 60  # the whole main job (`make run` up to serving) on 2 idle cores
STAGE = "train_improved_cnn"  # the main-job stage the projection replaces
VARIANTS = ("production", "nondeterministic", "contiguous", "compiled")
FULL = {"rounds": 9, "steps": 20, "warmup": 3, "slice": None, "overrides": []}
SMOKE = {"rounds": 2, "steps": 2, "warmup": 1, "slice": (600, 200, 500),
         "overrides": ["models.improved_cnn.conv_filters=[8, 8, 16, 16]", "models.improved_cnn.dense_units=[32, 16]",
                       "negatives.train_per_family=20", "negatives.val_per_family=10"]}


def _steps_per_epoch(p: Any, n_train: int) -> int:
    """Batches in one epoch of the recipe `p` over `n_train` training images (as `torch_loop.fit` counts them)."""
    return math.ceil(min(p.epoch_samples or n_train, n_train) / p.batch_size)


class _Variant:
    """One variant's network, optimizer and batches, trained `steps` at a time by the project's epoch loop."""

    def __init__(self, name: str, params: Any, data: tuple, negatives: Any, steps: int, seed: int) -> None:
        import torch

        from cnn_ocr.fit import torch_loop
        from cnn_ocr.models import build

        self.name, self.p, self.data, self.negatives, self.seed = name, params, data, negatives, seed
        self.gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = build("improved_cnn", params)
        if name != "contiguous":
            net.to(memory_format=torch.channels_last)
        self.model = torch.compile(net) if name == "compiled" else net
        self.opt, self.sched = torch_loop._make_optimizer(net, params, _steps_per_epoch(params, len(data[0])))
        self.steps = steps

    def train(self, steps: int | None = None) -> float:
        """Seconds for `steps` (default: the variant's) training steps; deterministic kernels as `ocr train` sets them
        (`torch_loop.seeded`), except for the variant without them."""
        from cnn_ocr.fit import torch_loop

        batches = torch_loop._epoch_batches(len(self.data[0]), self.p, self.gen, "cpu")[: steps or self.steps]
        kernels = contextlib.nullcontext() if self.name == "nondeterministic" else torch_loop.seeded(self.seed, "cpu")
        with kernels:
            t0 = time.perf_counter()
            torch_loop._train_epoch(self.model, self.opt, self.sched, batches, self.data, self.p, self.gen, None,
                                    self.negatives)
            return time.perf_counter() - t0


def _other_stages_s(results_dir: Path) -> tuple[float | None, str | None]:
    """The latest full main-job benchmark's stages other than the improved CNN's training (seconds), and its commit."""
    path = results_dir / "mainjob.json"
    if not path.is_file():
        return None, None
    result = json.loads(path.read_text())
    stages = result["figures"]["stages"]
    if result.get("mode") != "full" or STAGE not in stages:
        return None, None
    return sum(s["median"] for name, s in stages.items() if name != STAGE), result.get("git_commit")


def _figures(times: dict[str, list[float]], steps: int, p: Any, n_train: int, other_s: float | None,
             other_commit: str | None) -> dict[str, Any]:
    per_epoch = _steps_per_epoch(p, n_train)
    ms_per_step = {name: summarize([t / steps * 1000 for t in values]) for name, values in times.items()}
    base = ms_per_step["production"]["median"]
    out: dict[str, Any] = {"steps_per_epoch": per_epoch, "epochs": p.epochs, "batch_size": p.batch_size,
                           "negatives_per_digit": p.outlier_exposure.ratio if p.outlier_exposure.enabled else 0.0,
                           "other_stages_s": other_s, "other_stages_commit": other_commit, "variants": {}}
    for name, ms in ms_per_step.items():
        stage_s = ms["median"] / 1000 * per_epoch * p.epochs
        out["variants"][name] = {"ms_per_step": ms, "speedup_vs_production": base / ms["median"],
                                 "projected_stage_s": stage_s,
                                 "projected_mainjob_s": None if other_s is None else other_s + stage_s}
    out["fastest"] = min(out["variants"], key=lambda n: out["variants"][n]["ms_per_step"]["median"])
    return out


def _targets(fig: dict[str, Any]) -> list[dict[str, Any]]:
    best = fig["variants"][fig["fastest"]]
    prod = fig["variants"]["production"]
    out = [target(f"improved CNN's training alone ({fig['epochs']} epochs x {fig['steps_per_epoch']} steps), production "
                  "loop, projected", prod["projected_stage_s"], MAINJOB_BUDGET_S, "s", False)]
    if fig["fastest"] != "production":
        out.append(target(f"the same with the fastest loop variant ({fig['fastest']}), projected", best["projected_stage_s"],
                          MAINJOB_BUDGET_S, "s", False))
    if best["projected_mainjob_s"] is not None:
        out.append(target(f"whole main job with the fastest loop variant ({fig['fastest']}; other stages from mainjob.json)",
                          best["projected_mainjob_s"], MAINJOB_BUDGET_S, "s", False))
    return out


def run(smoke: bool = False, out_dir: Path | None = None) -> Path:
    """Time every variant's training steps, interleaved over rounds, and write `step.json`; returns its path."""
    import torch

    from benchmarks.common import RESULTS_DIR, core_count
    from benchmarks.recipes import _smoke_data_dir
    from benchmarks.training import _splits
    from cnn_ocr.config import load_params
    from cnn_ocr.ood.run import training_negatives
    from cnn_ocr.preprocess import to_model_input

    cfg = SMOKE if smoke else FULL
    out_dir = out_dir or RESULTS_DIR
    overrides = list(cfg["overrides"])
    if smoke:  # its small negatives go to a data folder of its own, as the recipe benchmark's smoke run does
        overrides.append(f"data.processed_dir={_smoke_data_dir(out_dir)}")
    params = load_params(overrides=overrides)
    p = params.models.improved_cnn
    torch.set_num_threads(core_count())
    splits = _splits(p.data_version, params, cfg["slice"])
    data = (torch.from_numpy(to_model_input(splits.train_x)), torch.from_numpy(splits.train_y.astype("int64")))
    oe = training_negatives(params, p)
    negatives = torch.from_numpy(to_model_input(oe[0])) if oe is not None else None
    variants = [_Variant(name, p, data, negatives, cfg["steps"], params.seed) for name in VARIANTS]
    for v in variants:  # warm-up (the compiled variant compiles here), outside the timing
        v.train(cfg["warmup"])
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(cfg["rounds"]):
        for v in variants if r % 2 == 0 else variants[::-1]:  # alternate the order: no variant always runs first
            times[v.name].append(v.train())
        log.info("step benchmark: round %d/%d %s", r + 1, cfg["rounds"],
                 {n: round(t[-1] / cfg["steps"] * 1000, 1) for n, t in times.items()})
    other_s, other_commit = _other_stages_s(RESULTS_DIR) if not smoke else (None, None)
    fig = _figures(times, cfg["steps"], p, len(data[0]), other_s, other_commit)
    settings = {"smoke": smoke, "slice": cfg["slice"], "rounds": cfg["rounds"], "steps": cfg["steps"], "warmup": cfg["warmup"],
                "overrides": cfg["overrides"], "threads": core_count(), "variants": list(VARIANTS)}
    return write_result("step", "smoke" if smoke else "full", fig, _targets(fig), torch_device(), settings, out_dir)
