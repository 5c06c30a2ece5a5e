"""`ocr register | ensemble | select | rollback | export | models ...`: registered versions and their aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnn_ocr.cli.common import (
    ParamsOpt,
    SetOpt,
    console,
    fail,
    one_line_errors,
    params_or_fail,
    setup_logging,
    write_metrics,
)

models_app = typer.Typer(help="Inspect and manage versions of the registered model.", no_args_is_help=True)

NameOpt = Annotated[str | None, typer.Option("--name", help="Registered model (default: select.registered_model).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Override the promotion gate (recorded in the history).")]


def register_cmd(
    run_id: Annotated[str, typer.Option("--run-id", help="MLflow run whose model to register.")],
    name: NameOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Register a run's model as a version (ONNX export + parity check + version tags)."""
    from cnn_ocr.select import register_run

    setup_logging()
    p = params_or_fail(params, (set_ or []) + ([f"select.registered_model={name}"] if name else []))
    with one_line_errors():
        info, created = register_run(run_id, p)
    verb = "registered as" if created else "already registered as"
    console.print(f"run {run_id} {verb} {info.name} v{info.version} "
                  f"(ONNX parity max diff {info.tags.get('onnx_parity_max_abs_diff')}, temperature "
                  f"{info.tags.get('temperature')})")


def select(
    force: ForceOpt = False,
    summary_out: Annotated[Path | None, typer.Option("--summary-out", help="Write the outcome as JSON (DVC metrics).")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Pick the best run (validation accuracy, then overfitting gap, within the latency budget) and promote it."""
    import json

    from cnn_ocr.atomic_files import atomic_write_bytes
    from cnn_ocr.select import production_summary, select_production

    setup_logging()
    p = params_or_fail(params, set_)
    with one_line_errors():
        outcome, ranked = select_production(p, force=force)
    table = Table(title=f"candidates by {p.select.rank_by} (latency budget {p.select.latency_budget_ms:g} ms)")
    for col in ("run", "family", "val acc", "test acc (reported)", "gap pts", "ms/img", "eligible"):
        table.add_column(col, no_wrap=True)
    for c in ranked:
        m = c.run.metrics
        mark = "*" if c.run.run_id == outcome.version.run_id else " "
        family = c.run.tags.get("family", "?") + (" (tuned)" if c.run.tags.get("tune.role") == "final" else "")
        table.add_row(mark + c.run.run_id[:8], family, f"{m['val_accuracy']:.2%}", f"{m['test_accuracy']:.2%}",
                      f"{c.sort_key[1]:.2f}", f"{m['inference_ms_per_image']:.2f}", "yes" if c.eligible else "no")
    console.print(table)
    forced = " (FORCED)" if outcome.forced else ""
    console.print(f"{outcome.version.name} v{outcome.version.version} -> {outcome.alias}{forced}: {outcome.reason}")
    if summary_out is not None:
        with one_line_errors():
            summary = production_summary(p.select.registered_model, outcome)
        atomic_write_bytes(summary_out, (json.dumps(summary, indent=2) + "\n").encode())


def ensemble(
    run: Annotated[list[str] | None, typer.Option("--run", help="Member run id (repeat; default: the best "
                                                                "`ensemble.members` CNN runs by validation accuracy).")] = None,
    members: Annotated[int | None, typer.Option("--members", min=1, max=10, help="How many runs to average "
                                                                                 "(default: ensemble.members).")] = None,
    metrics_out: Annotated[Path | None, typer.Option("--metrics-out", help="Final metrics as JSON (DVC metrics).")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Average the probabilities of finished CNN runs into one model, scored and logged as a run of its own."""
    from cnn_ocr.ensembling import build_ensemble

    setup_logging()
    p = params_or_fail(params, (set_ or []) + ([f"ensemble.members={members}"] if members else []))
    with one_line_errors():
        result = build_ensemble(p, run)
    m = result.metrics
    console.print(f"ensemble run {result.run_id} in experiment {p.ensemble.experiment}: test accuracy "
                  f"{m['test_accuracy']:.2%} (best member {m['best_member_test_accuracy']:.2%}), validation "
                  f"{m['val_accuracy']:.2%}, gap {m['overfit_gap']:.2f} points, {m['inference_ms_per_image']:.2f} ms "
                  f"per image; `ocr select` ranks it with the other runs", highlight=False)
    if metrics_out is not None:
        write_metrics(metrics_out, m)


def rollback(
    to: Annotated[int | None, typer.Option("--to", min=1, help="Version to roll back to (default: the previous one).")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")] = "",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Move `production` back to the version that held it before."""
    from cnn_ocr.select import rollback as do_rollback

    setup_logging()
    p = params_or_fail(params, set_)
    with one_line_errors():
        entry = do_rollback(p, to, reason)
    console.print(f"{p.select.registered_model}: production v{entry['from']} -> v{entry['to']} ({entry['why']})")


@models_app.command("list")
def models_list(name: NameOpt = None, params: ParamsOpt = Path("params.yaml")) -> None:
    """Registered versions with their aliases and key metrics."""
    from cnn_ocr.registry import list_versions

    name = name or params_or_fail(params, []).select.registered_model
    with one_line_errors():
        versions = list_versions(name)
    if not versions:
        fail(f"{name} has no versions yet; run `ocr select` or `ocr register --run-id ID`")
    table = Table(title=name)
    for col in ("ver", "aliases", "family", "test acc", "gap pts", "ms/img", "data", "run"):
        table.add_column(col, no_wrap=True)
    for v in versions:
        t = v.tags
        acc = f"{float(t['test_accuracy']):.2%}" if "test_accuracy" in t else "?"
        table.add_row(str(v.version), ", ".join(v.aliases), t.get("family", "?"), acc,
                      f"{float(t.get('overfit_gap', 'nan')):.2f}", f"{float(t.get('inference_ms_per_image', 'nan')):.2f}",
                      t.get("data_version", "?"), v.run_id[:8])
    console.print(table)


@models_app.command("history")
def models_history(name: NameOpt = None, params: ParamsOpt = Path("params.yaml")) -> None:
    """Every alias move: when, who, which alias, from -> to, what and why."""
    from cnn_ocr.registry import read_history

    name = name or params_or_fail(params, []).select.registered_model
    with one_line_errors():
        entries = read_history(name)
    if not entries:
        fail(f"{name} has no alias history yet")
    console.print(f"{name}: alias history (oldest first)")
    for e in entries:
        moved = f"{'v' + str(e['from']) if e['from'] else '-'} -> {'v' + str(e['to']) if e['to'] else '-'}"
        console.print(f"{e['at']}  {e['by']}  {e['alias']}: {moved}  ({e['action']})  {e['why']}", highlight=False, markup=False)


@models_app.command("promote")
def models_promote(
    version: Annotated[int, typer.Argument(min=1, help="Version to promote.")],
    force: ForceOpt = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Put a registered version through the promotion gate (production, or challenger with the reason)."""
    from cnn_ocr.registry import get_version
    from cnn_ocr.select import promote

    setup_logging()
    p = params_or_fail(params, set_)
    with one_line_errors():
        outcome = promote(get_version(p.select.registered_model, version), p.select, force=force)
    forced = " (FORCED)" if outcome.forced else ""
    console.print(f"{outcome.version.name} v{version} -> {outcome.alias}{forced}: {outcome.reason}")


def export(
    alias: Annotated[str | None, typer.Option("--alias", help="Download the ONNX of the version holding this alias.")] = None,
    version: Annotated[int | None, typer.Option("--version", min=1, help="Download the ONNX of this version.")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Export a run's model to ONNX (with parity check).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for model.onnx + spec.json.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Write model.onnx + spec.json for a registered version (by alias or number) or for any run."""
    from cnn_ocr.select import export_target

    setup_logging()
    if sum(x is not None for x in (alias, version, run_id)) != 1:
        fail("give exactly one of --alias, --version or --run-id", code=2)
    p = params_or_fail(params, set_)
    with one_line_errors():
        folder, what = export_target(p, alias=alias, version=version, run_id=run_id, out=out)
    console.print(f"wrote {folder}/model.onnx and spec.json ({what})")


def register(app: typer.Typer) -> None:
    """Add the registry commands to the `ocr` app."""
    app.command("register")(register_cmd)
    app.command("ensemble")(ensemble)
    app.command("select")(select)
    app.command("rollback")(rollback)
    app.command("export")(export)
    app.add_typer(models_app, name="models")
