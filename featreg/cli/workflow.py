"""Commands the workflow's rules call: register (and evaluate), evaluate, collect-metrics (a shard of pairs), select-setting."""

from __future__ import annotations

import argparse
import json

from featreg.cli.options import add_pairs_arguments, pair_dirs
from featreg.errors import ConfigError


def _register(args: argparse.Namespace) -> int:
    from featreg.experiment.method_file import load_method_file
    from featreg.jobs.evaluate import evaluate_shard
    from featreg.jobs.register import register_shard
    from featreg.jobs.features import method_encoder_spec

    method = load_method_file(args.method_file)
    features = args.features
    if args.shard is not None and method.encoder is not None:
        features = args.shard  # a feature method's shard is its encoder's feature manifest
    pairs = pair_dirs(args)
    register_shard(
        method,
        pairs,
        args.out_dir,
        args.manifest,
        encoder_spec=method_encoder_spec(method, args.encoders, features),
        features_manifest=features,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        compile_encoder=args.compile,
    )
    if args.metrics is not None:
        evaluate_shard(pairs, args.metrics, method=method, results_dir=args.out_dir)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from featreg.experiment.method_file import load_method_file
    from featreg.jobs.evaluate import evaluate_shard

    method = None if args.method_file is None else load_method_file(args.method_file)
    evaluate_shard(pair_dirs(args), args.out, method=method, results_dir=args.results_dir)
    return 0


def _collect(args: argparse.Namespace) -> int:
    from featreg.jobs.collect import collect_metrics

    collect_metrics(args.tables, args.out)
    return 0


def _select(args: argparse.Namespace) -> int:
    from featreg.jobs.tuning import write_selection

    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--spec is not JSON: {exc}") from exc
    write_selection(spec, args.metrics, args.out, args.method_out)
    return 0


def _batch_size(text: str) -> int | str:
    """``--batch-size``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    device = {"choices": ["auto", "cpu", "cuda"], "default": "auto", "help": "where to compute (auto: cuda when available)"}

    p = subparsers.add_parser("register", help="register preprocessed pairs (batched) with one method")
    p.add_argument("--method-file", required=True, help="the method (results/<name>/methods/<method>.json)")
    p.add_argument("--encoders", nargs="+", default=None,
                   help="YAML/JSON files with encoder entries, for feature methods (default: the spec in --features)")
    p.add_argument("--features", default=None, help="feature manifest written by `featreg features`")
    add_pairs_arguments(p)  # a feature method's --shard is its feature manifest (pairs, spec and features)
    p.add_argument("--out-dir", required=True, help="results go to OUT_DIR/<patient>/")
    p.add_argument("--manifest", required=True, help="JSON written last, with each pair's status")
    p.add_argument("--device", **device)
    p.add_argument("--batch-size", type=_batch_size, default=8,
                   help="pairs optimised jointly; auto: the most that fit in free GPU memory (8 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder's backbone")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of an elastix method (one pair at a time)")
    p.add_argument("--metrics", default=None,
                   help="then evaluate the results as `featreg evaluate` does: CSV with one row per pair")
    p.set_defaults(func=_register)

    p = subparsers.add_parser("evaluate", help="metrics of pairs before (no --results-dir) or after registration")
    add_pairs_arguments(p)
    p.add_argument("--method-file", default=None, help="the method whose results are evaluated (with --results-dir)")
    p.add_argument("--results-dir", default=None, help="the method's results (RESULTS_DIR/<patient>/)")
    p.add_argument("--out", required=True, help="CSV with one row per pair")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("collect-metrics", help="concatenate shard metric tables into metrics.csv")
    p.add_argument("tables", nargs="+", help="shard CSV files")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_collect)

    p = subparsers.add_parser(
        "select-setting",
        help="apply a tuning selection rule to validation metrics; write the selection record",
        description="Pick one method's grid point from its validation metrics with the rule of --spec "
        "(highest mean of the rule's metric among the points whose mean %J<=0 is at most max_neg_jac_pct; "
        "ties broken as featreg.evaluation.statistics.TIE_BREAK) and write a JSON record holding the rule, "
        "every candidate's means and the tuned method, and write the tuned method to --method-out, "
        "which `featreg register --method-file` runs.",
    )
    p.add_argument("--spec", required=True, help="JSON of featreg.experiment.TuningPlan.selection_spec")
    p.add_argument("--metrics", nargs="+", required=True, help="validation metric tables of the candidates")
    p.add_argument("--out", required=True, help="the selection record (JSON)")
    p.add_argument("--method-out", required=True, help="the tuned method's file (results/<name>/methods/<base>@tuned.json)")
    p.set_defaults(func=_select)
