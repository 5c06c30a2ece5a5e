"""Recipe benchmark: training recipes of the improved CNN side by side, over the same seeds, in one run.

Each recipe is a set of `params.yaml` overrides on top of the defaults (`previous` is the defaults as they
were before the change being measured). Runs go seed by seed (every recipe for seed 1, then seed 2, ...), so an
interrupted run still holds matched pairs; each run trains in its own spawned process with the project's loop.
Which recipe is kept is decided on the *validation* split (mean over seeds); test accuracy is reported only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import summarize, target, torch_device, write_result
from benchmarks.training import _in_child, _job, _test_labels

log = logging.getLogger(__name__)

FAMILY = "improved_cnn"
PRODUCTION = "outlier_exposure_long"  # the recipe params.yaml trains (checked by `production_recipe`)
# params.yaml's values when the recipes below were measured, where it has moved since: under every recipe, so that
# a recipe keeps the meaning its figures were measured with (20 epochs until `outlier_exposure_long` shipped)
MEASURED_ON = ["models.improved_cnn.epochs=20"]
TEACHERS = "production-recipe-seeds"  # in a recipe's overrides: the production recipe's models, one per seed
OE = "models.improved_cnn.outlier_exposure.enabled"
EARLY_STOP = "models.improved_cnn.patience=4"  # the early stop of the recipes measured before the whole schedule
RECIPES: dict[str, list[str]] = {
    "previous": ["models.improved_cnn.ema_decay=null", f"{OE}=false", EARLY_STOP],
    "ema": ["models.improved_cnn.ema_decay=0.999", f"{OE}=false", EARLY_STOP],
    # the production recipe before the longer schedule: generated negatives in every batch (the not-a-digit score) and
    # the whole one-cycle schedule, without the early stop on the validation loss, which outlier exposure makes rise
    # mid-schedule
    "outlier_exposure_full_schedule": ["models.improved_cnn.ema_decay=null", f"{OE}=true",
                                       "models.improved_cnn.patience=null"],
    # the same with the early stop (the production recipe before the whole schedule was measured to pay)
    "outlier_exposure": ["models.improved_cnn.ema_decay=null", f"{OE}=true", EARLY_STOP],
    # the production recipe with the negatives' loss weighted 0.2 instead of 0.5: less of the digits' accuracy
    # spent on the not-a-digit score, if the refusals hold
    "outlier_exposure_light": ["models.improved_cnn.ema_decay=null", f"{OE}=true", "models.improved_cnn.patience=null",
                               "models.improved_cnn.outlier_exposure.weight=0.2"],
    # the production recipe with a quarter as many negatives as digits in each batch (32 per 128) instead of as many:
    # less of each batch's capacity and time spent on the not-a-digit score, if the refusals hold
    "outlier_exposure_quarter": ["models.improved_cnn.ema_decay=null", f"{OE}=true", "models.improved_cnn.patience=null",
                                 "models.improved_cnn.outlier_exposure.ratio=0.25"],
    # the production recipe with negatives only from epoch 11 of 20: the digits learned first, as without negatives,
    # the not-a-digit score fitted while the one-cycle schedule anneals (outlier exposure as fine-tuning)
    "outlier_exposure_late": ["models.improved_cnn.ema_decay=null", f"{OE}=true", "models.improved_cnn.patience=null",
                              "models.improved_cnn.outlier_exposure.start_epoch=11"],
    # the production recipe with the training forward pass under bf16 autocast (weights, optimizer and evaluation in
    # fp32): an epoch took half the time on a CPU with AMX, if the accuracy and the refusals hold
    "outlier_exposure_bf16": ["models.improved_cnn.ema_decay=null", f"{OE}=true", "models.improved_cnn.patience=null",
                              "models.improved_cnn.precision=bf16"],
    # the same with only the convolutional features under bf16 autocast, the dense head (logits) in fp32
    "outlier_exposure_bf16_features": ["models.improved_cnn.ema_decay=null", f"{OE}=true",
                                       "models.improved_cnn.patience=null", "models.improved_cnn.precision=bf16_features"],
    # outlier exposure as a second phase: the whole schedule on digits alone (as `previous`, without its early stop),
    # then 4 epochs re-fitting only the dense head on digits and negatives, the conv features frozen: half the
    # training time of the production recipe, if the accuracy and the refusals hold
    "outlier_exposure_head": ["models.improved_cnn.ema_decay=null", f"{OE}=true", "models.improved_cnn.patience=null",
                              "models.improved_cnn.outlier_exposure.mode=head",
                              "models.improved_cnn.outlier_exposure.head_epochs=4",
                              "models.improved_cnn.outlier_exposure.head_lr=0.003",
                              "models.improved_cnn.outlier_exposure.head_convs=0"],
    # the production recipe with a fresh elastic distortion of every training image (and negative) in each batch,
    # on top of the affine jitter: Simard et al.'s alpha 34 / sigma 4 pixels, the distortion the MNIST records use
    "outlier_exposure_elastic": ["models.improved_cnn.ema_decay=null", f"{OE}=true", "models.improved_cnn.patience=null",
                                 "models.improved_cnn.augment.elastic_alpha=34", "models.improved_cnn.augment.elastic_sigma=4"],
    # the production recipe (params.yaml): outlier_exposure_full_schedule over a longer one-cycle schedule, 30 epochs
    # instead of 20 (the MNIST records train for 30-50): the same network, so the same latency, for 1.5x the time
    "outlier_exposure_long": ["models.improved_cnn.ema_decay=null", f"{OE}=true", "models.improved_cnn.patience=null",
                              "models.improved_cnn.epochs=30"],
    # the production recipe distilled from the ensemble of its own seeds (1, 2, 3: averaged softmax at temperature
    # 4, half of the digits' loss): the ensemble's accuracy in one network, so at one network's latency, if it carries
    "outlier_exposure_distill": ["models.improved_cnn.ema_decay=null", f"{OE}=true", "models.improved_cnn.patience=null",
                                 "models.improved_cnn.epochs=30",
                                 f"models.improved_cnn.distill.teachers=[{TEACHERS}]",
                                 "models.improved_cnn.distill.weight=0.5", "models.improved_cnn.distill.temperature=4"],
}
FULL = {"seeds": [1, 2, 3], "slice": None, "overrides": []}
SMOKE = {"seeds": [0, 1], "slice": (600, 200, 500),
         "overrides": ["models.improved_cnn.epochs=2", "models.improved_cnn.epoch_samples=400",
                       "models.improved_cnn.conv_filters=[8, 8, 16, 16]", "models.improved_cnn.dense_units=[32, 16]",
                       "negatives.train_per_family=20", "negatives.val_per_family=10", "ood.heldout_samples=50"]}


def _recipe_figures(runs: list[dict[str, Any]], test_y: np.ndarray, recorded_ensemble: float | None = None
                    ) -> dict[str, Any]:
    """A recipe's figures; without the probabilities of every run, the ensemble is the one recorded for these
    same runs (`recorded_ensemble`, used only when all of them were resumed), else None."""
    test = [r["test_accuracy"] for r in runs]
    val = [r["val_accuracy"] for r in runs]
    with_probs = all("test_probs" in r for r in runs)  # a resumed run whose probabilities were not cached has none
    ensemble = recorded_ensemble if all("resumed_from" in r for r in runs) else None
    if len(runs) > 1 and with_probs:
        ensemble = float(np.mean(np.mean([r["test_probs"] for r in runs], axis=0).argmax(1) == test_y))
    refused = [r["refusals"] for r in runs if "refusals" in r]  # runs measured before these figures have none
    return {"test_accuracy": summarize(test), "test_accuracy_mean": float(np.mean(test)),
            "val_accuracy": summarize(val), "val_accuracy_mean": float(np.mean(val)),
            "train_time_s": summarize([r["train_time_s"] for r in runs]),
            "refusals_mean": ({k: float(np.mean([f[k] for f in refused])) for k in refused[0]}
                              if refused and len(refused) == len(runs) else None),
            "ensemble_test_accuracy": ensemble,
            "runs": [{k: v for k, v in r.items() if k not in ("test_probs", "per_epoch")} for r in runs]}


def _chosen(recipes: dict[str, dict[str, Any]]) -> str | None:
    """The recipe with the highest mean validation accuracy over the most seeds run."""
    most = max((f["val_accuracy"]["n"] for f in recipes.values()), default=0)
    full = {name: f for name, f in recipes.items() if f["val_accuracy"]["n"] == most}
    return max(full, key=lambda name: full[name]["val_accuracy_mean"]) if full else None


def _targets(fig: dict[str, Any]) -> list[dict[str, Any]]:
    """Test accuracy (and the seeds' ensemble) of the recipe kept on validation; the production recipe's test
    accuracy when it is another, and its refusal of the validation negatives against the promotion gate."""
    chosen, production = fig.get("chosen"), fig.get("production")
    if chosen is None:
        return []

    def seeds(f: dict[str, Any]) -> tuple[int, str]:
        n = f["test_accuracy"]["n"]
        return n, "" if n >= 3 else f"only {n} seed(s); the target asks for 3"

    f = fig["recipes"][chosen]
    n, few = seeds(f)
    out = [target(f"recipe kept on validation ({chosen}): test accuracy, mean of {n} seeds",
                  100 * f["test_accuracy_mean"], 99.70, "%", True, few)]
    if f["ensemble_test_accuracy"] is not None:
        out.append(target(f"ensemble of the {n} seeds of {chosen}", 100 * f["ensemble_test_accuracy"], 99.75, "%", True))
    p = fig["recipes"].get(production)
    if p is not None:
        n, few = seeds(p)
        if production != chosen:
            out.append(target(f"production recipe ({production}, params.yaml): test accuracy, mean of {n} seeds",
                              100 * p["test_accuracy_mean"], 99.70, "%", True, few))
        if p.get("refusals_mean") and fig.get("refusal_gate") is not None:  # every run has them
            out.append(target(f"production recipe ({production}): validation negatives refused, mean of {n} seeds",
                              100 * p["refusals_mean"]["refused_val_negatives"], 100 * fig["refusal_gate"], "%", True,
                              few))
    return [t | {"met": t["met"] and not t["note"]} for t in out]


def log_to_store(path: Path) -> int:
    """Log every run of a `recipes.json` result to the `training-recipes` MLflow experiment (once: runs of a
    result already logged are skipped); returns how many runs were logged."""
    import json

    import mlflow

    from cnn_ocr.tracking import store
    from cnn_ocr.tracking.reading import search_runs

    result = json.loads(Path(path).read_text())
    stamp = result["date"]
    if search_runs([store.RECIPES_EXPERIMENT], f"tags.result_date = '{stamp}'"):
        return 0
    mlflow.set_experiment(experiment_id=store.ensure_experiment(store.RECIPES_EXPERIMENT))
    logged = 0
    for name, fig in result["figures"]["recipes"].items():
        for r in fig["runs"]:
            with mlflow.start_run(run_name=f"{name}-seed{r['seed']}"):
                mlflow.log_params({"recipe": name, "seed": r["seed"], "family": FAMILY,
                                   "overrides": " ".join(result["figures"]["recipe_overrides"][name])}
                                  | ({"ood_detector": r["refusals_detector"]} if "refusals_detector" in r else {}))
                mlflow.log_metrics({k: float(r[k]) for k in ("val_accuracy", "test_accuracy", "train_time_s")}
                                   | {f"ood_{k}": float(v) for k, v in r.get("refusals", {}).items()})
                mlflow.set_tags({"result_date": stamp, "benchmark": "recipes", "git_commit": result.get("git_commit", "")})
            logged += 1
    return logged


def recipe_overrides(name: str, overrides: list[str]) -> list[str]:
    """What a run of recipe `name` trains with: the values the recipes were measured on, the recipe's own overrides,
    then the run's (`overrides`: a smoke run's small network and 2 epochs hold for every recipe)."""
    return [*MEASURED_ON, *RECIPES[name], *overrides]


def production_recipe(names: list[str]) -> str | None:
    """The recipe that trains the improved CNN exactly as `params.yaml` does (the production recipe), if any."""
    from cnn_ocr.config import load_params

    ref = load_params().models.improved_cnn
    return next((n for n in names if load_params(overrides=recipe_overrides(n, [])).models.improved_cnn == ref), None)


def production_models_dir(out_dir: Path, smoke: bool) -> Path:
    """Where the production recipe's models live: a smoke run's beside its results in `out_dir`, the full size ones in
    the benchmarks' git-ignored cache (shared by every full run), in a folder named for the recipe."""
    from benchmarks.common import CACHE_DIR

    return out_dir / "production-models" if smoke else CACHE_DIR / "production-recipe" / PRODUCTION


def production_models(overrides: list[str], seeds: list[int], sizes: Any, model_dir: Path) -> dict[int, Path]:
    """The production recipe's weights for each seed (`model_dir/improved_cnn-seed<N>.pt`), each trained when
    missing in its own spawned process as a recipe run is (other benchmarks score them or distill from them)."""
    recipe = recipe_overrides(PRODUCTION, overrides)
    weights = {seed: model_dir / f"{FAMILY}-seed{seed}.pt" for seed in seeds}
    for seed, file in weights.items():
        if not file.is_file():
            log.info("training the production recipe, seed %d, into %s", seed, model_dir)
            _in_child(_job, FAMILY, recipe, seed, sizes, str(model_dir), True, False)
    return weights


def _with_teachers(overrides: list[str], teachers: list[Path]) -> list[str]:
    """`overrides` with the TEACHERS placeholder replaced by the teachers' files."""
    return [o.replace(TEACHERS, ", ".join(str(t) for t in teachers)) for o in overrides]


def _smoke_data_dir(out_dir: Path) -> Path:
    """`out_dir`/data: links to the prepared digit versions, so that a smoke run's small generated negatives
    never land among the project's data versions."""
    from cnn_ocr.config import load_params
    from cnn_ocr.data import ensure_prepared
    from cnn_ocr.data.layout import VERSIONS, version_dir

    data = load_params().data
    ensure_prepared(data)
    folder = Path(out_dir) / "data"
    for version in VERSIONS:
        link = version_dir(version, data.model_copy(update={"processed_dir": folder}))
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(version_dir(version, data).resolve(), target_is_directory=True)
    return folder


def _probs_file(cache_dir: Path, mode: str, name: str, seed: int) -> Path:
    return cache_dir / f"{mode}-{name}-seed{seed}.npy"


def _resumed(path: Path, settings: dict[str, Any], overrides: dict[str, list[str]], names: list[str],
             cache_dir: Path, mode: str, test_y: np.ndarray) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The finished runs of an interrupted result at `path` with the same settings, of each recipe whose
    overrides are unchanged (a recipe added since trains all its seeds), each with its
    test probabilities when they were cached (`cache_dir`) and still agree with its recorded test accuracy;
    and each recipe's recorded ensemble accuracy (it stands while no run of that recipe is added)."""
    import json

    if not path.is_file():
        return {}, {}
    old = json.loads(path.read_text())
    if old.get("settings") != json.loads(json.dumps(settings)):
        log.warning("recipe benchmark: %s has other settings; starting afresh", path)
        return {}, {}
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        recorded = old["figures"]["recipe_overrides"].get(name)
        if recorded != overrides[name]:  # a recipe new since, or changed: all its seeds train
            if recorded is not None:
                log.warning("recipe benchmark: recipe %s changed since %s; training it afresh", name, path)
            continue
        for r in old["figures"]["recipes"].get(name, {}).get("runs", []):
            run = dict(r, resumed_from=r.get("resumed_from", old["date"]))
            file = _probs_file(cache_dir, mode, name, r["seed"])
            if file.is_file():
                probs = np.load(file)
                if float(np.mean(probs.argmax(1) == test_y)) == r["test_accuracy"]:
                    run["test_probs"] = probs
            runs.setdefault(name, []).append(run)
    log.info("recipe benchmark: resuming with %s", {n: [r["seed"] for r in rs] for n, rs in runs.items()})
    return runs, {n: old["figures"]["recipes"][n]["ensemble_test_accuracy"] for n in runs}


def run(smoke: bool = False, out_dir: Path | None = None, recipes: list[str] | None = None, resume: bool = False,
        cache_dir: Path | None = None, train: bool = True) -> Path | None:
    """Train every recipe for every seed and write `recipes.json`; returns its path. With `resume`, the runs of
    an interrupted result with the same settings are kept and only the missing (recipe, seed) pairs are trained;
    with `recipes` (which implies `resume`), only those recipes' missing seeds are, the others' held runs kept as
    they are; without `train` (which implies `resume`), nothing is trained and the held runs' figures are written afresh.
    Each run's test probabilities are cached in `cache_dir` (git-ignored; full size: the benchmarks' cache beside the
    production recipe's models) for the seeds' ensemble after a resume."""
    from benchmarks.common import CACHE_DIR, RESULTS_DIR
    from cnn_ocr.config import load_params

    cfg = SMOKE if smoke else FULL
    mode = "smoke" if smoke else "full"
    out_dir = out_dir or RESULTS_DIR
    if smoke:  # its small negatives go to a data folder of its own, beside links to the prepared digits
        cfg = dict(cfg, overrides=[*cfg["overrides"], f"data.processed_dir={_smoke_data_dir(out_dir)}"])
    cache_dir = cache_dir or (CACHE_DIR / "recipe-probs" if out_dir == RESULTS_DIR else out_dir / "recipe-probs")
    model_dir = production_models_dir(out_dir, smoke)
    names = list(RECIPES)
    unknown = sorted(set(recipes or []) - set(names))
    if unknown:
        raise ValueError(f"unknown recipe(s) {', '.join(unknown)}; choose among {', '.join(names)}")
    to_train = set(recipes or names) if train else set()
    settings = {"smoke": smoke, "seeds": cfg["seeds"], "slice": cfg["slice"], "overrides": cfg["overrides"],
                "rule": "the recipe with the highest mean validation accuracy is kept"}
    overrides = {n: RECIPES[n] for n in names}
    test_y = _in_child(_test_labels, cfg["overrides"], cfg["slice"])
    done, ensembles = (_resumed(out_dir / "recipes.json", settings, overrides, names, cache_dir, mode, test_y)
                       if resume or recipes or not train else ({}, {}))
    runs: dict[str, list[dict[str, Any]]] = {name: list(done.get(name, [])) for name in names}
    production = production_recipe(names)
    gate = load_params(overrides=cfg["overrides"]).select.min_negative_refusal

    def write() -> Path:
        fig: dict[str, Any] = {"recipes": {n: _recipe_figures(r, test_y, ensembles.get(n)) for n, r in runs.items() if r},
                               "recipe_overrides": overrides}
        fig["chosen"], fig["production"] = _chosen(fig["recipes"]), production
        fig["refusal_gate"] = gate  # the promotion gate's share of validation negatives a production model refuses
        return write_result("recipes", mode, fig, _targets(fig), torch_device(), settings, out_dir)

    path = None
    for seed in cfg["seeds"]:
        for name in names:
            if name not in to_train or any(r["seed"] == seed for r in runs[name]):
                continue
            log.info("recipe benchmark: %s seed %d", name, seed)
            recipe = recipe_overrides(name, cfg["overrides"])
            if any(TEACHERS in o for o in recipe):  # distillation: from the production recipe's models of every seed
                teachers = production_models(cfg["overrides"], cfg["seeds"], cfg["slice"], model_dir)
                recipe = _with_teachers(recipe, list(teachers.values()))
            # no model cache; negatives when the recipe turns outlier exposure on; its not-a-digit figures
            result = _in_child(_job, FAMILY, recipe, seed, cfg["slice"], None, True, True)
            cache_dir.mkdir(parents=True, exist_ok=True)
            np.save(_probs_file(cache_dir, mode, name, seed), result["test_probs"])
            runs[name].append(result)
            path = write()  # partial results survive an interrupted run, and `--resume` continues from them
    if path is None and any(runs.values()):  # nothing (left) to train: the held runs' figures afresh
        path = write()
    if path is not None and not smoke:
        log.info("recipe runs logged to the tracking store: %d", log_to_store(path))
    return path
