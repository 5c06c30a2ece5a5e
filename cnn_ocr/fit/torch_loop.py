"""The one training loop for the CNN families.

Written for speed on a small CPU as well as a GPU: the whole split lives in memory as one tensor, batches
are shuffled index slices (no per-sample Dataset), augmentation is one batched affine resample, loss /
accuracy are accumulated on the device and read back once per epoch (no per-step host syncs), and the
weights are held channels-last while training (oneDNN's faster layout for these convolutions on CPU;
the model is handed back in the default layout, so checkpoints and exports do not depend on it).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import deterministic

from cnn_ocr.families import BatchAugmentParams, TorchTrainParams
from cnn_ocr.fit import EpochCallback, FitResult, StepCallback
from cnn_ocr.fit.ema import WeightAverage
from cnn_ocr.preprocess import BACKGROUND, IMAGE_SIZE

log = logging.getLogger(__name__)

STEP_REPORT_EVERY = 20


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; asking for 'cuda' without one is an error."""
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use device=auto or cpu")
    return "cuda" if requested == "cuda" or (requested == "auto" and has_cuda) else "cpu"


def use_all_cores() -> int:
    """Let torch use every core this process may run on; returns the thread count."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def seeded(seed: int, device: str) -> Iterator[None]:
    """Seed torch and, on CPU, enforce deterministic kernels for the duration (restored afterwards).

    Deterministic mode's filling of fresh buffers with NaN (a check for reads of uninitialized memory) is
    turned off: every kernel here writes its whole output, and the fill cost about a tenth of a training step."""
    previous, fill = torch.are_deterministic_algorithms_enabled(), deterministic.fill_uninitialized_memory
    torch.manual_seed(seed)
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
        deterministic.fill_uninitialized_memory = False
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        deterministic.fill_uninitialized_memory = fill


def _gaussian_smoothed(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) smoothed by a separable Gaussian of `sigma` pixels, zero outside the image (as the stored
    copies' elastic distortion, `scipy.ndimage.gaussian_filter` there, smooths before scaling by alpha)."""
    radius = min(math.ceil(3 * sigma), IMAGE_SIZE - 1)
    t = torch.arange(-radius, radius + 1, device=field.device, dtype=field.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = field.shape[1]
    field = F.conv2d(field, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(field, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


def augment_batch(x: torch.Tensor, p: BatchAugmentParams, gen: torch.Generator) -> torch.Tensor:
    """Random rotation, zoom and shift per image and, with `elastic_alpha` > 0, a fresh elastic distortion per
    image (displacements of alpha * a Gaussian-smoothed uniform field, in pixels), one batched resample;
    background stays black."""
    n = x.shape[0]
    u = torch.rand(n, 4, generator=gen, device=x.device) * 2 - 1  # uniform in [-1, 1]
    angle = u[:, 0] * math.radians(p.rotation_deg)
    zoom = 1 + u[:, 1] * p.scale
    shift = u[:, 2:] * (2 * p.shift_px / IMAGE_SIZE)  # pixels -> normalized coordinates
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if p.elastic_alpha > 0:
        noise = torch.rand(n, 2, x.shape[2], x.shape[3], generator=gen, device=x.device) * 2 - 1
        displacement = _gaussian_smoothed(noise, p.elastic_sigma) * (p.elastic_alpha * 2 / IMAGE_SIZE)
        grid = grid + displacement.permute(0, 2, 3, 1)  # (N, H, W, [x, y]) in normalized coordinates
    return F.grid_sample(x - BACKGROUND, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + BACKGROUND


def evaluate_loss_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y) in eval mode, large batches, one host sync."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            yb = y[start : start + batch_size]
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
    n = max(len(x), 1)
    return loss_sum.item() / n, correct.item() / n


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy from the softmax of `logits` to the uniform distribution (outlier exposure's term):
    -(mean of the logits - logsumexp of the logits), per row, averaged."""
    return -(logits.mean(1) - torch.logsumexp(logits, 1)).mean()


def distillation_loss(logits: torch.Tensor, teacher: nn.Module, x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target term: KL divergence from the teacher's probabilities at `temperature` (the
    average of its members' softmax; `teacher` is an `Ensemble`, run without gradients) to the student's at the
    same temperature, times temperature squared so that its gradients keep their scale."""
    with torch.no_grad():
        target = torch.softmax(teacher.member_logits(x).float() / temperature, dim=-1).mean(0)
    log_student = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(log_student, target, reduction="batchmean") * temperature**2


def _with_negatives(model: nn.Module, xb: torch.Tensor, negatives: torch.Tensor | None, p: TorchTrainParams,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of the digits and, with outlier exposure on, of `ratio` random negatives per digit (one forward
    pass, so batch norm sees both, as in Hendrycks et al.).

    The negatives go through the same random resampling as the digits when augmentation is on: otherwise
    resampling's slight blur alone tells a training digit from a crisp negative, the network learns that
    shortcut, and crisp validation digits come out as negatives (the improved CNN fell to 39 % that way)."""
    if negatives is None or not p.outlier_exposure.enabled:
        return _forward(model, xb, p.precision), None
    count = max(1, round(len(xb) * p.outlier_exposure.ratio))
    pick = torch.randint(len(negatives), (count,), generator=gen, device=xb.device)
    nb = negatives[pick]
    if p.augment.enabled:
        nb = augment_batch(nb, p.augment, gen)
    logits = _forward(model, torch.cat([xb, nb]), p.precision)
    return logits[: len(xb)], logits[len(xb):]


def resolve_precision(requested: str, device: str) -> str:
    """'auto' -> 'bf16_features' on a CPU with AMX tiles (the matrix units that make bf16 convolutions fast: an
    epoch of the improved CNN took half the time there), else 'fp32' (CUDA's bf16 is not measured here); others
    as given."""
    if requested != "auto":
        return requested
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "bf16_features" if device == "cpu" and amx() else "fp32"


def _forward(model: nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
    """The training forward pass in `precision` (resolved), returning fp32 logits: 'bf16' runs all of it under
    bf16 autocast, 'bf16_features' only the convolutional features (the dense head in fp32); the weights and
    their updates stay fp32 either way."""
    if precision == "fp32":
        return model(x)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
        if precision == "bf16":
            return model(x).float()
        features = model.features(x)
    return model.classifier(features.float())


def _train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    batches: list[torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    p: TorchTrainParams,
    gen: torch.Generator,
    report: Callable[[int, torch.Tensor, int], None] | None,
    negatives: torch.Tensor | None = None,
    average: WeightAverage | None = None,
    frozen: nn.Module | None = None,
    teacher: nn.Module | None = None,
) -> tuple[float, float]:
    model.train()
    if frozen is not None:  # a part not being trained runs as at inference (batch norm's statistics, no dropout)
        frozen.eval()
    x_all, y_all = data
    loss_sum = torch.zeros((), device=x_all.device)
    correct = torch.zeros((), device=x_all.device, dtype=torch.long)
    seen = 0
    for i, idx in enumerate(batches):
        xb, yb = x_all[idx], y_all[idx]
        if p.augment.enabled:
            xb = augment_batch(xb, p.augment, gen)
        logits, neg_logits = _with_negatives(model, xb, negatives, p, gen)
        loss = F.cross_entropy(logits, yb, label_smoothing=p.label_smoothing)
        if teacher is not None:  # the digits' loss: labels and the teacher's soft targets, weighted
            soft = distillation_loss(logits, teacher, xb, p.distill.temperature)
            loss = (1 - p.distill.weight) * loss + p.distill.weight * soft
        if neg_logits is not None:
            loss = loss + p.outlier_exposure.weight * uniform_cross_entropy(neg_logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if average is not None:
            average.update(model)
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
        seen += len(idx)
        if report is not None and (i + 1) % STEP_REPORT_EVERY == 0:
            report(i + 1, loss_sum, seen)
    return loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1)


def _epoch_batches(n: int, p: TorchTrainParams, gen: torch.Generator, device: str) -> list[torch.Tensor]:
    take = min(p.epoch_samples or n, n)
    perm = torch.randperm(n, generator=gen, device=device)[:take]
    return list(torch.split(perm, p.batch_size))


def _make_optimizer(model: nn.Module, p: TorchTrainParams, steps_per_epoch: int) -> tuple:
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = None
    if p.lr_schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=p.lr, total_steps=max(p.epochs * steps_per_epoch, 1), pct_start=0.25
        )
    return opt, sched


class _BestKeeper:
    """Tracks the lowest validation loss; keeps a copy of those weights when early stopping is on."""

    def __init__(self, patience: int | None) -> None:
        self.patience, self.best_loss, self.best_epoch, self.bad, self.state = patience, math.inf, 0, 0, None

    def update(self, model: nn.Module, epoch: int, val_loss: float) -> bool:
        """Record an epoch; True when training should stop."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad = val_loss, epoch, 0
            if self.patience is not None:
                self.state = copy.deepcopy(model.state_dict())
        else:
            self.bad += 1
        return self.patience is not None and self.bad >= self.patience


def _state(epoch: int, model: nn.Module, opt: torch.optim.Optimizer, sched, gen: torch.Generator,
           keeper: _BestKeeper, result: FitResult, elapsed_s: float, average: WeightAverage | None) -> dict:
    """Everything needed to continue after `epoch` exactly as if never stopped (tensors, numbers, lists)."""
    return {"average": average.state_dict() if average is not None else None,
            "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None, "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(), "history": [dict(r) for r in result.history],
            "keeper": {k: getattr(keeper, k) for k in ("best_loss", "best_epoch", "bad", "state")},
            "train_time_s": elapsed_s}


def _restore(state: dict, model: nn.Module, opt: torch.optim.Optimizer, sched, gen: torch.Generator,
             keeper: _BestKeeper, result: FitResult, average: WeightAverage | None) -> int:
    """Load a `_state` checkpoint into the objects of a fresh fit; returns the last completed epoch."""
    model.load_state_dict(state["model"])
    if average is not None and state.get("average") is not None:
        average.load_state_dict(state["average"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None and state["scheduler"] is not None:
        sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    for key, value in state["keeper"].items():
        setattr(keeper, key, value)
    result.history = [dict(r) for r in state["history"]]
    result.epochs_run, result.train_time_s = state["epoch"], float(state["train_time_s"])
    return int(state["epoch"])


def _judged(model: nn.Module, average: WeightAverage | None) -> contextlib.AbstractContextManager:
    """The weights an epoch is judged by: the running average when one is kept, else the model's own."""
    return average.swapped_in(model) if average is not None else contextlib.nullcontext()


def _epoch_row(model: nn.Module, val: tuple[torch.Tensor, torch.Tensor], eval_batch_size: int, epoch: int,
               tr_loss: float, tr_acc: float, opt: torch.optim.Optimizer, t0: float) -> dict[str, float]:
    """An epoch's history row: its training figures, the model's validation loss and accuracy, the learning rate."""
    va_loss, va_acc = evaluate_loss_acc(model, *val, eval_batch_size)
    return {"epoch": epoch, "train_loss": tr_loss, "train_accuracy": tr_acc, "val_loss": va_loss, "val_accuracy": va_acc,
            "lr": opt.param_groups[0]["lr"], "epoch_time_s": time.perf_counter() - t0}


def _fit_head(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
              p: TorchTrainParams, gen: torch.Generator, negatives: torch.Tensor, steps: int, eval_batch_size: int,
              result: FitResult, on_epoch: EpochCallback | None) -> None:
    """Outlier exposure as a second phase (`mode: head`): the trained features up to the last `head_convs` conv
    layers frozen (no gradients, inference mode), the rest and the dense head re-fitted for `head_epochs` on digits
    and negatives with their own Adam (no weight decay) and one-cycle schedule peaking at `head_lr`, over epochs of
    `steps` batches like the schedule's. Its epochs follow the
    schedule's in the history (numbered on from it); the frozen layers stay as the digits alone made them."""
    oe = p.outlier_exposure
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    if oe.head_convs > len(convs):
        raise ValueError(f"outlier_exposure.head_convs is {oe.head_convs} but the model has {len(convs)} conv layers")
    cut = convs[-oe.head_convs] if oe.head_convs else len(model.features)
    frozen_part, trained = model.features[:cut], nn.ModuleList([model.features[cut:], model.classifier])
    head_p = p.model_copy(update={"lr": oe.head_lr, "epochs": oe.head_epochs, "weight_decay": 0.0})
    opt, sched = _make_optimizer(trained, head_p, steps)
    frozen = [q for q in frozen_part.parameters() if q.requires_grad]
    for q in frozen:
        q.requires_grad_(False)
    try:
        for k in range(1, oe.head_epochs + 1):
            t0, epoch = time.perf_counter(), result.epochs_run + 1
            batches = _epoch_batches(len(train[0]), p, gen, train[0].device.type)
            tr_loss, tr_acc = _train_epoch(model, opt, sched, batches, train, p, gen, None, negatives, None,
                                            frozen=frozen_part)
            row = _epoch_row(model, val, eval_batch_size, epoch, tr_loss, tr_acc, opt, t0)
            result.history.append(row)
            result.epochs_run, result.head_epochs = epoch, k
            if on_epoch is not None:
                on_epoch(epoch, dict(row))
            log.debug("head epoch %d/%d %s", k, oe.head_epochs, {key: round(v, 4) for key, v in row.items()})
    finally:
        for q in frozen:
            q.requires_grad_(True)


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    p: TorchTrainParams,
    *,
    seed: int,
    eval_batch_size: int = 2048,
    on_epoch: EpochCallback | None = None,
    on_step: StepCallback | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    negatives: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
) -> FitResult:
    """Train `model` in place on (x, y) tensors already on the target device; see the module docstring.

    With `p.patience` set, stops after that many epochs without a lower validation loss and restores the
    best weights. `on_epoch(epoch, metrics)` runs after every epoch (1-based) and may raise to abort.
    `on_checkpoint(state)` receives the complete training state after every epoch; `resume=state` continues
    from it, to the same result as an uninterrupted run (same device). `negatives` (normalized inputs on
    the same device) are used when `p.outlier_exposure.enabled`: each batch (from epoch `start_epoch`) adds
    `ratio` random negatives per digit, whose softmax is pushed towards uniform with weight
    `p.outlier_exposure.weight`; with `mode: head` the schedule trains on digits alone and `_fit_head` then
    re-fits the dense head on both (after any restore of the best or averaged weights). With `p.ema_decay` set,
    an exponential moving average of the weights is validated, early-stopped on and returned. With `teacher` (an
    `Ensemble` on the same device, `p.distill` its weight and temperature), every batch's digits, augmented as the
    student sees them, also carry the teacher's soft targets (`distillation_loss`; the schedule's batches, not a
    head phase's).
    """
    device = train[0].device.type
    p = p.model_copy(update={"precision": resolve_precision(p.precision, device)})
    oe = p.outlier_exposure
    head_mode = oe.enabled and oe.mode == "head" and negatives is not None
    two_parts = all(hasattr(model, a) for a in ("features", "classifier"))
    if p.precision == "bf16_features" and not two_parts:
        raise ValueError("precision bf16_features needs a model with `features` and `classifier` parts; use bf16 or fp32")
    if head_mode and not two_parts:
        raise ValueError("outlier_exposure.mode head needs a model with `features` and `classifier` parts; use joint")
    model.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(train[0])
    steps = math.ceil(min(p.epoch_samples or n, n) / p.batch_size)
    opt, sched = _make_optimizer(model, p, steps)
    average = WeightAverage(model, p.ema_decay) if p.ema_decay is not None else None
    result, keeper, t_start = FitResult(), _BestKeeper(p.patience), time.perf_counter()
    first = 1 if resume is None else _restore(resume, model, opt, sched, gen, keeper, result, average) + 1
    t_start -= result.train_time_s
    if keeper.patience is not None and keeper.bad >= keeper.patience:  # it had stopped early before the interruption
        first, result.stopped_early = p.epochs + 1, result.epochs_run < p.epochs
    for epoch in range(first, p.epochs + 1):
        t0 = time.perf_counter()
        report = None
        if on_step is not None:
            report = lambda done, ls, seen, e=epoch: on_step(e, done, steps, ls.item() / seen)  # noqa: E731
        joint = not head_mode and epoch >= oe.start_epoch
        tr_loss, tr_acc = _train_epoch(model, opt, sched, _epoch_batches(n, p, gen, device), train, p, gen, report,
                                        negatives if joint else None, average, teacher=teacher)
        with _judged(model, average):  # validation (and the callbacks) see the weights that would be kept
            row = _epoch_row(model, val, eval_batch_size, epoch, tr_loss, tr_acc, opt, t0)
            result.history.append(row)
            result.epochs_run = epoch
            stop = keeper.update(model, epoch, row["val_loss"])
            if on_epoch is not None:
                on_epoch(epoch, dict(row))
        log.debug("epoch %d/%d %s", epoch, p.epochs, {k: round(v, 4) for k, v in row.items()})
        if on_checkpoint is not None:
            on_checkpoint(_state(epoch, model, opt, sched, gen, keeper, result, time.perf_counter() - t_start,
                                 average))
        if stop:
            result.stopped_early = epoch < p.epochs
            break
    result.best_epoch = keeper.best_epoch
    if keeper.state is not None and keeper.best_epoch != result.epochs_run:
        model.load_state_dict(keeper.state)
        result.restored_best = True
    elif average is not None:
        model.load_state_dict(average.shadow)
    if head_mode:
        _fit_head(model, train, val, p, gen, negatives, steps, eval_batch_size, result, on_epoch)
    model.to(memory_format=torch.contiguous_format)
    result.train_time_s = time.perf_counter() - t_start
    return result
