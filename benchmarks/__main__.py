"""`python -m benchmarks {training,recipes,tta,step,inference,service,mainjob,batch,ood,photos,page,all} [--smoke]
[--out DIR] [--no-readme]` (recipes: also `--resume`, `--recipes`, `--figures-only`).

`page` (not part of `all`: it needs Chromium and a served model) measures the draw-a-digit page with the model in
`OCR_FIGURES_MODEL_DIR` (default: params.yaml's `export.production_dir`)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

NAMES = ("training", "recipes", "tta", "step", "inference", "service", "mainjob", "batch", "ood", "photos")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks, write their JSON results and refresh the README table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", choices=(*NAMES, "page", "all", "readme"),
                        help="benchmark to run ('readme': table only)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check that the benchmark works")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results; smoke: its smoke/)")
    parser.add_argument("--families", default=None,
                        help="training only: comma-separated subset of base_cnn,svm,improved_cnn,fast (merged into "
                             "the existing result)")
    parser.add_argument("--seeds", default=None, help="training only: comma-separated seeds for every family")
    parser.add_argument("--resume", action="store_true",
                        help="recipes only: keep the runs of the interrupted result with the same settings, train the rest")
    parser.add_argument("--recipes", default=None,
                        help="recipes only: comma-separated recipes to train (their missing seeds); the held result's "
                             "other runs are kept")
    parser.add_argument("--figures-only", action="store_true",
                        help="recipes only: train nothing; write the held result's figures and targets afresh")
    parser.add_argument("--no-readme", action="store_true", help="do not refresh the README table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from benchmarks import common, readme_table
    from benchmarks.common import RESULTS_DIR

    out = args.out or (RESULTS_DIR / "smoke" if args.smoke else RESULTS_DIR)  # smoke never replaces real figures
    names = NAMES if args.name == "all" else () if args.name == "readme" else (args.name,)
    for name in names:
        common.mark_start()
        try:
            extra = {}
            if name == "training":
                extra = {"families": args.families.split(",") if args.families else None,
                         "seeds": [int(x) for x in args.seeds.split(",")] if args.seeds else None}
            elif name == "recipes":
                extra = {"resume": args.resume, "train": not args.figures_only,
                         "recipes": args.recipes.split(",") if args.recipes else None}
            path = importlib.import_module(f"benchmarks.{name}").run(smoke=args.smoke, out_dir=out, **extra)
        except (RuntimeError, OSError, ValueError) as exc:
            print(f"error: benchmark {name} failed: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {path}")
    if not args.no_readme and not args.smoke and out == RESULTS_DIR:
        print("README table refreshed" if readme_table.refresh() else "README has no bench markers; table not written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
