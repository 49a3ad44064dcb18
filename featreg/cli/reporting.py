"""``featreg report``: tables, figures and one self-contained HTML report from metrics.csv."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="summary.csv, table1.md, figures and report.html from metrics.csv",
        description="Write summary.csv, statistics.csv, table1.md, reproduction.md, the figures and a "
        "self-contained report.html into OUT_DIR. The baseline, the figure patient (figures.patient) and "
        "the α curve (alpha_sweep) come from --config. Figures that need registration results or pairs are "
        "skipped with a note when --results / --pairs are not given.",
    )
    parser.add_argument("--metrics", required=True, type=Path, help="metrics.csv (docs/design.md)")
    parser.add_argument("--config", required=True, type=Path,
                        help="the experiment's config (the workflow's reports/<name>/config.yaml)")
    parser.add_argument("--out-dir", required=True, type=Path, help="folder for the report files")
    parser.add_argument("--pairs", type=Path, help="preprocessed pairs folder (qualitative panel)")
    parser.add_argument("--results", type=Path,
                        help="registration results folder (seconds per pair and device from run.json, the cost "
                        "figure, Jacobian maps, panel)")
    parser.add_argument("--feature-figures", type=Path, help="folder written by `featreg feature-figures`")
    parser.add_argument("--validation-metrics", type=Path,
                        help="a tuning run's validation metrics (grid points × validation patients)")
    parser.add_argument("--selections", nargs="+", type=Path, default=[],
                        help="the selection records of `featreg select-setting` (with --validation-metrics)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from featreg.reporting.report import build_report, report_settings

    build_report(
        args.metrics, args.out_dir, config=args.config, **report_settings(args.config), pairs_dir=args.pairs,
        results_dir=args.results, feature_figures_dir=args.feature_figures, n_resamples=args.bootstrap,
        seed=args.seed, validation_csv=args.validation_metrics, selection_jsons=args.selections,
    )
    return 0
