"""``featreg fetch-checkpoints``, ``featreg features`` and ``featreg feature-figures``."""

from __future__ import annotations

import argparse
from pathlib import Path

from featreg.cli.options import add_pairs_arguments, pair_dirs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fetch-checkpoints", help="download official encoder checkpoints (needs internet)")
    p.add_argument("--dest", type=Path, required=True, help="folder to write the checkpoints to")
    p.add_argument("names", nargs="*", help="checkpoint names (default: all with a direct URL)")
    p.set_defaults(func=_fetch)

    p = subparsers.add_parser("features", help="encode and cache the fixed image of each pair")
    p.add_argument("--encoders", type=Path, nargs="+", required=True, help="YAML/JSON files with encoder entries (or an `encoders:` key)")
    p.add_argument("--encoder", required=True, help="encoder name in those files")
    add_pairs_arguments(p)
    p.add_argument("--out-dir", type=Path, required=True, help="cache files go to OUT_DIR/<patient>.pt")
    p.add_argument("--manifest", type=Path, help="JSON written last, listing patient -> feature file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_features)

    p = subparsers.add_parser("feature-figures", help="PCA, rigid-motion distance curves and commutativity figures")
    p.add_argument("--encoders", type=Path, nargs="+", required=True, help="YAML/JSON files with encoder entries")
    p.add_argument("--names", nargs="+", help="encoders to include (default: all in the file)")
    p.add_argument("--pair", type=Path, required=True, help="a preprocessed pair folder (its fixed image is used)")
    p.add_argument("--displacement", type=Path, help="(X, Y, 1, 1, 2) mm field for the commutativity figure")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_figures)


def _fetch(args: argparse.Namespace) -> int:
    from featreg.encoders.checkpoints import CHECKPOINTS, fetch_checkpoint

    names = args.names or [n for n, e in CHECKPOINTS.items() if e.url is not None]
    for name in names:
        print(fetch_checkpoint(name, args.dest))
    return 0


def _features(args: argparse.Namespace) -> int:
    from featreg.encoders.registry import load_specs
    from featreg.jobs.features import features_shard

    spec = load_specs(args.encoders, [args.encoder])[args.encoder]
    features_shard(spec, pair_dirs(args), args.out_dir, args.manifest, args.device)
    return 0


def _figures(args: argparse.Namespace) -> int:
    from featreg.encoders.registry import load_specs
    from featreg.reporting.feature_figures import write_feature_figures

    specs = load_specs(args.encoders, args.names)
    write_feature_figures(specs, args.pair, args.out, displacement=args.displacement, device=args.device)
    return 0
