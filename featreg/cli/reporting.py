"""``featreg report``: tables, figures and one self-contained HTML report from metrics.csv."""

from __future__ import annotations

import argparse
from pathlib import Path

from featreg.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="summary.csv, table1.md, figures and report.html from metrics.csv",
        description="Write summary.csv, statistics.csv, table1.md, reproduction.md, the figures and a "
        "self-contained report.html into OUT_DIR. Figures that need registration results or pairs are "
        "skipped with a note when --results / --pairs are not given.",
    )
    parser.add_argument("--metrics", required=True, type=Path, help="metrics.csv (docs/design.md)")
    parser.add_argument("--out-dir", required=True, type=Path, help="folder for the report files")
    parser.add_argument("--baseline", default="ncc", help="method the others are tested against (default: ncc)")
    parser.add_argument("--pairs", type=Path, help="preprocessed pairs folder (qualitative panel)")
    parser.add_argument("--results", type=Path, help="registration results folder (Jacobian maps, panel)")
    parser.add_argument("--config", type=Path, help="experiment config, named in the report")
    parser.add_argument("--feature-figures", type=Path, help="folder written by `featreg feature-figures`")
    parser.add_argument("--alpha-family", metavar="ENCODER/DISTANCE",
                        help="α curve to draw, e.g. dinov2/cosine (default: the one with most α values)")
    parser.add_argument("--figure-patient", metavar="PATIENT",
                        help="patient of the Jacobian maps and the qualitative panel (default: the first patient "
                        "with every map; the baseline's median-Dice patient for the panel)")
    parser.add_argument("--validation-metrics", type=Path,
                        help="a tuning run's validation metrics (grid points × validation patients)")
    parser.add_argument("--selections", nargs="+", type=Path, default=[],
                        help="the selection records of `featreg select-setting` (with --validation-metrics)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from featreg.reporting.report import build_report

    family = None
    if args.alpha_family:
        parts = args.alpha_family.split("/")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--alpha-family must be ENCODER/DISTANCE, got {args.alpha_family!r}")
        family = (parts[0], parts[1])
    build_report(
        args.metrics, args.out_dir, baseline=args.baseline, pairs_dir=args.pairs, results_dir=args.results,
        config=args.config, feature_figures_dir=args.feature_figures, alpha_family=family,
        figure_patient=args.figure_patient, n_resamples=args.bootstrap, seed=args.seed,
        validation_csv=args.validation_metrics, selection_jsons=args.selections,
    )
    return 0
