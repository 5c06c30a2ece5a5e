"""The report's "Training recipes" section: each recipe change measured over the same seeds (benchmark
`recipes`, logged to the `training-recipes` experiment), its mean validation and test accuracy and its effect
against the previous recipe. The recipe kept is the one with the best mean validation accuracy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnn_ocr.ood.report import REFUSAL_FIGURES
from cnn_ocr.tracking import store
from cnn_ocr.tracking.reading import RunRecord, search_runs

if TYPE_CHECKING:
    from cnn_ocr.report import Doc

BASELINE_RECIPE = "previous"
# the shipped detector's shares refused, as the recipe runs log them
REFUSALS = tuple(f"ood_{k}" for k in REFUSAL_FIGURES)


def _latest_by_recipe(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs of the newest benchmark result only, grouped by recipe, ordered by seed."""
    if not runs:
        return {}
    newest = max(r.tags.get("result_date", "") for r in runs)
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.tags.get("result_date", "") == newest:
            groups.setdefault(run.params["recipe"], []).append(run)
    return {name: sorted(g, key=lambda r: int(r.params["seed"])) for name, g in sorted(groups.items())}


def render_recipes(doc: Doc) -> None:
    """Write the section, or one line saying how to fill it."""
    groups = _latest_by_recipe(search_runs([store.RECIPES_EXPERIMENT]))
    doc.add("### Training recipes (the same seeds, side by side)", "")
    if not groups:
        doc.add("_No recipe runs yet: `python -m benchmarks recipes`._", "")
        return
    doc.add("Each change to the improved CNN's recipe, trained for every seed in one benchmark run; the recipe kept is "
            "the one with the best mean **validation** accuracy (test accuracy is reported only).", "",
            "| recipe | overrides | seeds | mean val. acc. | mean test acc. | val. effect (pts) | test effect (pts) "
            "| refused (mean): test digits / val. negatives / Fashion / letters / pictograms |",
            "|---|---|---|---|---|---|---|---|")
    base = groups.get(BASELINE_RECIPE, [])
    for name, runs in groups.items():
        seeds = ", ".join(doc.v("raw", ("param", r, "seed")) for r in runs)
        val = doc.v("mean_pct", *[("metric", r, "val_accuracy") for r in runs])
        test = doc.v("mean_pct", *[("metric", r, "test_accuracy") for r in runs])
        effects = ["", ""]
        if name != BASELINE_RECIPE and len(base) == len(runs):
            effects = [doc.v("mean_gain_pts", *[("metric", r, key) for r in runs], *[("metric", r, key) for r in base])
                       for key in ("val_accuracy", "test_accuracy")]
        refused = " / ".join(doc.v("mean_pct", *[("metric", r, key) for r in runs]) for key in REFUSALS
                             if all(key in r.metrics for r in runs))  # runs measured before these figures: none
        detectors = {r.params.get("ood_detector") for r in runs}
        if refused and len(detectors) == 1 and None not in detectors:  # the score the shares were measured with
            refused = f"{detectors.pop()}: {refused}"
        doc.add(f"| {name} | `{runs[0].params.get('overrides', '')}` | {seeds} | {val} | {test} | {effects[0]} | "
                f"{effects[1]} | {refused} |")
    doc.add("")
