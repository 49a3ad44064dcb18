"""Commands the workflow's rules call on a shard of pairs: register, evaluate, collect-metrics."""

from __future__ import annotations

import argparse
from featreg.errors import ConfigError
from featreg.experiment import Method


def _register(args: argparse.Namespace) -> int:
    from featreg.shards import register_shard

    method = Method.from_json(args.method_json)
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
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from featreg.shards import evaluate_shard

    method = Method.from_json(args.method_json) if args.method_json else None
    evaluate_shard(args.pairs, args.out, method=method, results_dir=args.results_dir)
    return 0


def _collect(args: argparse.Namespace) -> int:
    from featreg.shards import collect_metrics

    collect_metrics(args.tables, args.out)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    device = {"choices": ["auto", "cpu", "cuda"], "default": "auto", "help": "where to compute (auto: cuda when available)"}

    p = subparsers.add_parser("register", help="register preprocessed pairs (batched) with one method")
    p.add_argument("--method-json", required=True, help="method as JSON (featreg.experiment.Method)")
    p.add_argument("--encoders", nargs="+", default=None, help="YAML/JSON files with encoder entries, for feature methods")
    p.add_argument("--features", default=None, help="feature manifest written by `featreg features`")
    p.add_argument("--pairs", nargs="+", required=True, help="preprocessed pair folders")
    p.add_argument("--out-dir", required=True, help="results go to OUT_DIR/<patient>/")
    p.add_argument("--manifest", required=True, help="JSON written last, with each pair's status")
    p.add_argument("--device", **device)
    p.add_argument("--batch-size", type=int, default=8, help="pairs optimised jointly")
    p.set_defaults(func=_register)

    p = subparsers.add_parser("evaluate", help="metrics of pairs before (no --results-dir) or after registration")
    p.add_argument("--pairs", nargs="+", required=True, help="preprocessed pair folders")
    p.add_argument("--method-json", default=None, help="the method whose results are evaluated")
    p.add_argument("--results-dir", default=None, help="the method's results (RESULTS_DIR/<patient>/)")
    p.add_argument("--out", required=True, help="CSV with one row per pair")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("collect-metrics", help="concatenate shard metric tables into metrics.csv")
    p.add_argument("tables", nargs="+", help="shard CSV files")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_collect)
