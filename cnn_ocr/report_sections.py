"""The sections of the experiments report, in the product's structure. Values go through `Doc.v` only."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cnn_ocr import registry, select
from cnn_ocr.config import Params
from cnn_ocr.registry import PRODUCTION, RegistryError
from cnn_ocr.report_ood import render_ood
from cnn_ocr.report_recipes import render_recipes
from cnn_ocr.tracking import store
from cnn_ocr.tracking.reading import RunRecord, get_run, search_runs

if TYPE_CHECKING:
    from cnn_ocr.report import Doc

TITLES = {"base_cnn": "Base CNN", "svm": "SVM", "improved_cnn": "Improved CNN", "ensemble": "Ensemble of CNNs"}
HYPERPARAMS = {
    "base_cnn": [("conv_filters", "Conv filters per layer"), ("kernel_size", "Kernel size"),
                 ("dense_units", "Dense units"), ("dropout", "Dropout"), ("lr", "Adam learning rate"),
                 ("batch_size", "Batch size"), ("epochs", "Epochs")],
    "svm": [("kernel", "Kernel"), ("gamma", "gamma"), ("C", "C (regularization)"), ("scaling", "Scaling"),
            ("pca_components", "PCA components")],
    "improved_cnn": [("conv_filters", "Conv filters"), ("dense_units", "Dense units"),
                     ("conv_dropout", "Dropout after max-pooling"), ("dense_dropout", "Dropout in dense layers"),
                     ("lr", "Adam learning rate (peak)"), ("lr_schedule", "Schedule"), ("batch_size", "Batch size"),
                     ("epochs", "Epochs (max)"), ("patience", "Early-stopping patience"),
                     ("epoch_samples", "Images per epoch")],
}
WORKFLOW = """\
```bash
ocr ui                                   # browse every run: http://127.0.0.1:5000
ocr train --model improved_cnn --set models.improved_cnn.lr=3e-4
ocr tune --model improved_cnn            # Optuna study, nested runs in `hyperparameter-tuning`
ocr select                               # selection rule + promotion gate -> alias `production`
ocr models list && ocr models history    # versions, aliases, every alias move
ocr rollback                             # production back to the previous version
ocr export --alias production            # model.onnx + spec.json for the service
git checkout <commit> && dvc checkout    # code and data of a past run
ocr reproduce <run-id>                   # train it again and compare the metrics
mlflow run . -e train -P model=base_cnn --env-manager local
ocr report                               # regenerate this file
```"""


def _where(uri: str) -> str:
    """A store URI as a reader should see it: project-relative for sqlite files inside the project."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = Path(uri[len(prefix):])
        with contextlib.suppress(ValueError):
            return f"{prefix}{path.resolve().relative_to(Path.cwd().resolve())}"
    return uri


def best_run(runs: list[RunRecord], family: str, dataset: str) -> RunRecord | None:
    """The family's best run by the selection rule (validation accuracy, then overfitting gap)."""
    ranked = select.rank_candidates([r for r in runs if r.tags.get("family") == family], float("inf"), dataset)
    return ranked[0].run if ranked else None


def _ident(run: RunRecord) -> str:
    commit = run.tags.get("git_commit", "unknown")[:8]
    dirty = " (uncommitted changes)" if run.tags.get("git_dirty") == "true" else ""
    return f"`{run.run_id}` (Git commit `{commit}`{dirty})"


def _data_line(run: RunRecord) -> str:
    dvc = run.tags.get("data_dvc_hash", "untracked")
    return (f"- **Data Version**: `data/processed/{run.tags.get('data_version', '?')}` "
            f"(dataset `{run.tags.get('dataset', 'mnist')}`, DVC hash `{dvc}`)")


def _results(doc: Doc, run: RunRecord, indent: str) -> None:
    m = lambda key, fmt: doc.metric(run, key, fmt)  # noqa: E731
    doc.add(f"{indent}- Results:",
            f"{indent}  - Test accuracy: {m('test_accuracy', 'pct')}",
            f"{indent}  - Training accuracy: {m('train_accuracy', 'pct')}",
            f"{indent}  - Validation accuracy: {m('val_accuracy', 'pct')}",
            f"{indent}  - Overfitting: {m('overfit_gap', 'pts')} points gap between train and test",
            f"{indent}  - Training loss (last epoch): {m('train_loss', 'loss')}",
            f"{indent}  - Training time: {m('training_time_s', 's')} s; inference "
            f"{m('inference_ms_per_image', 'ms')} ms per image (single image, CPU)")


def _model_block(doc: Doc, run: RunRecord, indent: str, slug: str) -> None:
    family = run.tags["family"]
    doc.add(f"{indent}- Run: {_ident(run)}, {doc.v('date', ('start', run, ''))}",
            f"{indent}- Hyperparameters:")
    for key, label in HYPERPARAMS.get(family, []):
        if key in run.params and run.params[key] != "null":
            doc.add(f"{indent}  - {label}: {doc.v('param', ('param', run, key))}")
    _results(doc, run, indent)
    for artifact, caption in (("plots/learning_curve.png", "learning curve"),
                              ("plots/confusion_matrix.png", "confusion matrix")):
        image = doc.figure(run, artifact, f"{slug}-{family}-{artifact.split('/')[-1]}", f"{TITLES[family]} {caption}")
        if image:
            doc.add(f"{indent}- {caption.capitalize()}: {image}")


def _experiment(doc: Doc, number: int, title: str, runs: list[RunRecord], families: list[str],
                dataset: str, slug: str) -> dict[str, RunRecord]:
    shown = {f: r for f in families if (r := best_run(runs, f, dataset)) is not None}
    if not shown:
        doc.add(f"### Experiment {number}: {title}", "",
                f"_No finished runs yet: `ocr train --model {families[0]}`._", "")
        return shown
    newest = max(shown.values(), key=lambda r: r.start_time)
    doc.add(f"### Experiment {number}: {title} ({doc.v('date', ('start', newest, ''))})")
    for i, (family, run) in enumerate(shown.items()):
        if i == 0:
            doc.add(_data_line(run))
        doc.add(f"- **{TITLES[family]}**")
        _model_block(doc, run, "  ", slug)
    doc.add("")
    return shown


def _trial_table(doc: Doc, parent: RunRecord, trials: list[RunRecord]) -> None:
    if not trials:
        return
    keys = [k[6:] for k in sorted(parent.params) if k.startswith("space.")]
    doc.add("", "| trial | state | " + " | ".join(keys) + " | val accuracy |", "|---" * (3 + len(keys)) + "|")
    for t in trials:
        values = " | ".join(doc.v("param", ("param", t, k)) if k in t.params else "?" for k in keys)
        state = "pruned" if t.tags.get("pruned") == "true" else t.status.lower()
        doc.add(f"| {doc.v('raw', ('tag', t, 'optuna.trial'))} | {state} | {values} | "
                f"{doc.metric(t, 'val_accuracy', 'pct')} |")
    doc.add("")


def _pruner(doc: Doc, parent: RunRecord) -> str:
    if "fidelity.pruner" not in parent.params:
        return "median pruner"
    return f"pruner {doc.v('raw', ('param', parent, 'fidelity.pruner'))}"


def _fidelity_lines(doc: Doc, parent: RunRecord) -> list[str]:
    """What one trial was (epochs, training images, data version), when the parent run recorded it."""
    if "fidelity.epochs" not in parent.params:
        return []
    return [f"- **Fidelity**: each trial trains {doc.v('raw', ('param', parent, 'fidelity.epochs'))} epochs on "
            f"{doc.v('raw', ('param', parent, 'fidelity.train_samples'))} training images of "
            f"`{doc.v('raw', ('param', parent, 'fidelity.data_version'))}`; the first trial runs the default params"]


def _tuning(doc: Doc, runs: list[RunRecord], baseline: RunRecord | None, dataset: str) -> RunRecord | None:
    parents = [r for r in runs if r.tags.get("tune.role") == "parent" and "best_trial" in r.tags]
    if not parents:
        doc.add("### Experiment 3: Hyperparameter Tuning", "", "_No tuning study yet: `ocr tune`._", "")
        return None
    parent = parents[0]  # newest
    study = parent.tags["optuna.study"]
    trials = sorted((r for r in runs if r.tags.get("optuna.study") == study and r.tags.get("tune.role") == "trial"),
                    key=lambda r: int(r.tags["optuna.trial"]))
    final = next((r for r in runs if r.run_id == parent.tags.get("final_run_id")), None)
    doc.add(f"### Experiment 3: Hyperparameter Tuning ({doc.v('date', ('start', parent, ''))})",
            f"- **Parent Run ID**: {_ident(parent)}, study `{study}` (`{_where(parent.tags.get('optuna.storage', ''))}`)",
            f"- **Model**: {TITLES.get(parent.tags.get('tune.family', ''), '?')} (variants)",
            "- **Tuned Parameters**: " + ", ".join(
                f"`{k[6:]}` {doc.v('space', ('param', parent, k))}" for k in sorted(parent.params) if k.startswith("space.")),
            f"- **Trials**: {doc.metric(parent, 'trials_complete', 'int')} complete, "
            f"{doc.metric(parent, 'trials_pruned', 'int')} pruned "
            f"({_pruner(doc, parent)} on validation accuracy), "
            f"{doc.metric(parent, 'trials_fail', 'int')} failed",
            *_fidelity_lines(doc, parent),
            f"- **Best trial**: #{doc.v('raw', ('tag', parent, 'best_trial'))} with validation accuracy "
            f"{doc.metric(parent, 'best_val_accuracy', 'pct')}: " + ", ".join(
                f"`{k[5:]}` = {doc.v('param', ('param', parent, k))}" for k in sorted(parent.params) if k.startswith("best.")))
    _trial_table(doc, parent, trials)
    for artifact, caption in (("plots/optimization_history.png", "optimization history"),
                              ("plots/parallel_coordinate.png", "parallel coordinates")):
        image = doc.figure(parent, artifact, f"tuning-{artifact.split('/')[-1]}", caption)
        if image:
            doc.add(f"- {caption.capitalize()}: {image}")
    if "tune.outcome" in parent.tags:
        doc.add(f"- **Versus the defaults (validation)**: outcome `{doc.v('raw', ('tag', parent, 'tune.outcome'))}`; "
                f"default run validation accuracy {doc.metric(parent, 'default_val_accuracy', 'pct')}, gain of the "
                f"tuned params {doc.metric(parent, 'val_gain_pp', 'pts')} points (the test set takes no part)")
    if "trial_gain_pp" in parent.metrics:
        doc.add(f"- **Best trial over trial 0 at trial fidelity**: {doc.metric(parent, 'trial_gain_pp', 'pts')} points "
                f"(a training at full settings only above `tune.min_trial_gain` "
                f"{doc.v('raw', ('param', parent, 'min_trial_gain'))} points)")
    if final is not None:
        doc.add("- **Best params trained on the full settings**:")
        _model_block(doc, final, "  ", "tuning")
        if baseline is not None and "test_accuracy" in final.metrics:
            doc.add(f"  - Versus Experiment 2: test accuracy "
                    f"{doc.v('diff_pct', ('metric', final, 'test_accuracy'), ('metric', baseline, 'test_accuracy'))} "
                    f"points; training time {doc.metric(final, 'training_time_s', 's')} s vs "
                    f"{doc.metric(baseline, 'training_time_s', 's')} s; overfitting gap "
                    f"{doc.metric(final, 'overfit_gap', 'pts')} vs {doc.metric(baseline, 'overfit_gap', 'pts')} points")
    doc.add("")
    return final


def _ensemble(doc: Doc, runs: list[RunRecord], dataset: str) -> None:
    run = best_run(runs, "ensemble", dataset)
    if run is None:
        doc.add("### Experiment 4: Ensemble", "", "_No ensemble yet: `ocr ensemble`._", "")
        return
    doc.add(f"### Experiment 4: Ensemble ({doc.v('date', ('start', run, ''))})",
            f"- Run: {_ident(run)}: the averaged probabilities of the best finished CNN runs by validation "
            f"accuracy: `{doc.v('raw', ('tag', run, 'members'))}`"
            + (f", each also on the views `{doc.v('raw', ('param', run, 'views'))}` (dx, dy pixels, degrees: "
               "test-time augmentation)" if run.params.get("views", "[]") != "[]" else "")
            + f"; best member's test accuracy {doc.metric(run, 'best_member_test_accuracy', 'pct')}")
    _results(doc, run, "")
    image = doc.figure(run, "plots/confusion_matrix.png", "exp4-ensemble-confusion_matrix.png",
                       "Ensemble confusion matrix")
    if image:
        doc.add(f"- Confusion matrix: {image}")
    doc.add("")


def _production(doc: Doc, params: Params) -> None:
    name = params.select.registered_model
    doc.add("## Production Model Selection")
    try:
        prod = registry.resolve_alias(name, PRODUCTION)
    except RegistryError:
        doc.add("", "_No production model yet: `ocr select`._", "")
        return
    run = get_run(prod.run_id)
    moves = [e for e in registry.read_history(name) if e["alias"] == PRODUCTION and e["to"] == prod.version]
    ver = lambda key, fmt: doc.v(fmt, ("version_tag", prod, key))  # noqa: E731
    doc.add(f"The **{TITLES.get(run.tags.get('family', ''), '?')}** from experiment `{run.experiment}` holds the "
            f"alias `production`. The rule: highest {select.RANK_METRICS[params.select.rank_by]}, then the smaller "
            f"overfitting gap, within the latency budget; a new model must beat production by the margin. The test "
            f"set is reported, not used to choose. It was selected for:",
            f"1. Validation accuracy {doc.metric(run, 'val_accuracy', 'pct')} (test accuracy, reported: "
            f"{ver('test_accuracy', 'pct')})",
            f"2. Overfitting gap {ver('overfit_gap', 'pts')} points between train and test",
            f"3. Inference {ver('inference_ms_per_image', 'ms')} ms per image on CPU (single image)")
    if moves:
        doc.add(f"4. Promotion record: `{moves[-1]['action']}` by `{moves[-1]['by']}` at `{moves[-1]['at']}`: "
                f"`{moves[-1]['why']}`")
    doc.add("", f"- **Model Artifact**: `{name}` version `{prod.version}` (`models:/{name}@production`), run "
            f"`{prod.run_id}`, data `{prod.tags.get('data_version', '?')}`",
            f"- **Deployment Path**: ONNX (`onnx/model.onnx` + `onnx/spec.json` of the run; temperature "
            f"{ver('temperature', 'raw')}, parity max difference {ver('onnx_parity_max_abs_diff', 'raw')} on "
            f"{ver('onnx_parity_images', 'raw')} test images) served by `app/main.py` through ONNX Runtime "
            f"(`ocr export --alias production`)", "")


# Sections that read nothing but their own runs, so one can be rendered again on its own (`ocr report --section`).
STANDALONE: dict[str, Callable[[Doc], None]] = {"recipes": render_recipes}


def refreshed_note() -> str:
    """The line a section rendered on its own carries: which store it was read from."""
    return f"_This section alone was regenerated by `ocr report --section` from `{_where(store.tracking_uri())}`._"


def render(doc: Doc, params: Params) -> None:
    """Write the whole report into `doc`."""
    dataset = params.data.dataset
    base = search_runs([store.BASELINE_EXPERIMENT])
    improved = search_runs([store.IMPROVED_EXPERIMENT])
    tuning = search_runs([store.TUNING_EXPERIMENT])
    doc.add("# Experiment Tracking Documentation (MLflow)", "",
            "This document is generated by `ocr report` from the MLflow tracking store "
            f"(`{_where(store.tracking_uri())}`): hyperparameters, metrics and model performance of the runs below. "
            "Do not edit it by hand; run `ocr report` again.", "",
            "## Experiment Overview",
            "- **Goal**: Train and evaluate models for handwritten digit recognition (MNIST dataset)",
            "- **Models Tested**:", "  - Base CNN (Convolutional Neural Network)", "  - SVM (Support Vector Machine)",
            "  - Improved CNN (with batch normalization and dropout)",
            "  - Ensemble of the best CNN runs (averaged probabilities)",
            "- **Key Metrics**: Test accuracy, training accuracy, validation accuracy, training loss, overfitting gap",
            "- **Tracking Tool**: MLflow (`ocr ui` opens the dashboard on this store)", "",
            "## Experiment Details", "")
    baseline = _experiment(doc, 1, "Baseline Models", base, ["base_cnn", "svm"], dataset, "exp1")
    shown = _experiment(doc, 2, "Improved CNN", improved, ["improved_cnn"], dataset, "exp2")
    render_ood(doc, params.ood.detector, {**baseline, **shown}, TITLES)
    _tuning(doc, tuning, shown.get("improved_cnn"), dataset)
    render_recipes(doc)
    _ensemble(doc, search_runs([params.ensemble.experiment]), dataset)
    _production(doc, params)
    doc.add("## MLflow Workflow", WORKFLOW)
