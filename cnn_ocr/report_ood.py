"""The report's "Not-a-digit detection" section: for the best run of each CNN family, the shipped detector's
figures logged at training (`cnn_ocr.ood.run.log_detectors`): digits refused, validation negatives refused, each
held-out family's AUROC and refusal rate, and the calibration error of the accepted answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnn_ocr.tracking.reading import RunRecord

if TYPE_CHECKING:
    from cnn_ocr.report import Doc

HELDOUT = ("fashion", "handwriting", "pictograms")


def render_ood(doc: Doc, detector: str, runs: dict[str, RunRecord], titles: dict[str, str]) -> None:
    """Write the section for `runs` (family -> run), each with the detector it ships (its `ood_detector` tag,
    else `detector`, the configured one); runs without the figures are left out."""
    shipped = {f: r.tags.get("ood_detector", detector) for f, r in runs.items()}
    scored = {f: r for f, r in runs.items() if f"ood_{shipped[f]}_threshold" in r.metrics}
    doc.add("### Not-a-digit detection", "")
    if not scored:
        doc.add(f"_No run has {detector} figures yet: `ocr data negatives`, then train a CNN._", "")
        return
    doc.add(f"The shipped score (`ood.detector: {detector}`) of each family's best run, its threshold fitted to refuse at "
            "most the allowed share of validation digits; negatives are `negatives-v1`'s validation drawings, the other "
            "families are held out from training and tuning (AUROC / refused).", "",
            "| model | outlier exposure | detector | MNIST test refused | validation negatives refused | Fashion-MNIST | "
            "handwriting letters | pictograms | ECE of accepted |", "|---|---|---|---|---|---|---|---|---|")
    for family, run in scored.items():
        key = f"ood_{shipped[family]}_"
        held = [f"{doc.metric(run, key + 'auroc_' + h, 'auroc')} / {doc.metric(run, key + 'refused_' + h, 'pct')}"
                for h in HELDOUT]
        doc.add(f"| {titles.get(family, family)} | {run.params.get('outlier_exposure.enabled', 'False')} | "
                f"{shipped[family]} | {doc.metric(run, key + 'mnist_test_refused', 'pct')} | "
                f"{doc.metric(run, key + 'refused_val_negatives', 'pct')} | {' | '.join(held)} | "
                f"{doc.metric(run, key + 'ece_accepted', 'pct')} |")
    doc.add("")
