"""Commands the workflow's rules call: register, evaluate, collect-metrics (a shard of pairs), select-setting."""

from __future__ import annotations

import argparse
import json

from featreg.errors import ConfigError
from featreg.experiment import Method, load_method_file


def _method(args: argparse.Namespace) -> Method | None:
    """The method of --method-json or --method-file (a selection record); None when neither is given."""
    if args.method_file:
        return load_method_file(args.method_file)
    return Method.from_json(args.method_json) if args.method_json else None


def _register(args: argparse.Namespace) -> int:
    from featreg.shards import register_shard

    method = _method(args)
    spec = None
    if method.encoder is not None:
        from featreg.encoders.registry import load_encoder_specs

        if not args.encoders:
            raise ConfigError(f"method {method.name} uses encoder {method.encoder}: give --encoders")
        specs = {}
        for path in args.encoders:
            specs.update(load_encoder_specs(path))
        if method.encoder not in specs:
            raise ConfigError(f"encoder {method.encoder} of method {method.name} is not in {', '.join(args.encoders)}")
        spec = specs[method.encoder]
    register_shard(
        method,
        args.pairs,
        args.out_dir,
        args.manifest,
        encoder_spec=spec,
        features_manifest=args.features,
        device=args.device,
        batch_size=args.batch_size,
        compile_encoder=args.compile,
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from featreg.shards import evaluate_shard

    method = _method(args)
    evaluate_shard(args.pairs, args.out, method=method, results_dir=args.results_dir)
    return 0


def _collect(args: argparse.Namespace) -> int:
    from featreg.shards import collect_metrics

    collect_metrics(args.tables, args.out)
    return 0


def _select(args: argparse.Namespace) -> int:
    import pandas as pd

    from featreg.experiment import select_tuned
    from featreg.reporting.tables import read_metrics
    from featreg.io import write_json_atomic

    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--spec is not JSON: {exc}") from exc
    metrics = pd.concat([read_metrics(path) for path in args.metrics], ignore_index=True)
    write_json_atomic(args.out, select_tuned(spec, metrics))
    return 0


def _add_method_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--method-json", default=None, help="the method as JSON (featreg.experiment.Method)")
    group.add_argument("--method-file", default=None,
                       help="a selection record of `featreg select-setting`: its tuned method")


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
    _add_method_options(p, required=True)
    p.add_argument("--encoders", nargs="+", default=None, help="YAML/JSON files with encoder entries, for feature methods")
    p.add_argument("--features", default=None, help="feature manifest written by `featreg features`")
    p.add_argument("--pairs", nargs="+", required=True, help="preprocessed pair folders")
    p.add_argument("--out-dir", required=True, help="results go to OUT_DIR/<patient>/")
    p.add_argument("--manifest", required=True, help="JSON written last, with each pair's status")
    p.add_argument("--device", **device)
    p.add_argument("--batch-size", type=_batch_size, default=8,
                   help="pairs optimised jointly; auto: the most that fit in free GPU memory (8 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder's backbone")
    p.set_defaults(func=_register)

    p = subparsers.add_parser("evaluate", help="metrics of pairs before (no --results-dir) or after registration")
    p.add_argument("--pairs", nargs="+", required=True, help="preprocessed pair folders")
    _add_method_options(p, required=False)
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
        "every candidate's means and the tuned method, which `featreg register --method-file` runs.",
    )
    p.add_argument("--spec", required=True, help="JSON of featreg.experiment.TuningPlan.selection_spec")
    p.add_argument("--metrics", nargs="+", required=True, help="validation metric tables of the candidates")
    p.add_argument("--out", required=True, help="the selection record (JSON)")
    p.set_defaults(func=_select)
