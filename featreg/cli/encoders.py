"""``featreg fetch-checkpoints``, ``featreg features``, ``featreg feature-figures`` and ``featreg encoder-layers``."""

from __future__ import annotations

import argparse
from pathlib import Path

from featreg.cli.options import add_pairs_arguments, pair_dirs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fetch-checkpoints", help="download official encoder checkpoints (needs internet)")
    p.add_argument("--dest", type=Path, required=True, help="folder to write the checkpoints to")
    p.add_argument("names", nargs="*", help="checkpoint names (default: all with a direct URL)")
    p.set_defaults(func=_fetch)

    p = subparsers.add_parser("features", help="encode and cache the fixed (and moving) image of each pair")
    p.add_argument("--encoders", type=Path, nargs="+", required=True, help="YAML/JSON files with encoder entries (or an `encoders:` key)")
    p.add_argument("--encoder", required=True, help="encoder name in those files")
    add_pairs_arguments(p)
    p.add_argument("--out-dir", type=Path, required=True, help="cache files go to OUT_DIR/<patient>.pt")
    p.add_argument("--manifest", type=Path, help="JSON written last, listing patient -> feature file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--moving", action="store_true",
                   help="also cache each moving image's features (OUT_DIR/<patient>.moving.pt), for encode: once")
    p.set_defaults(func=_features)

    p = subparsers.add_parser("feature-figures", help="PCA, rigid-motion distance curves and commutativity figures")
    p.add_argument("--encoders", type=Path, nargs="+", required=True, help="YAML/JSON files with encoder entries")
    p.add_argument("--names", nargs="+", help="encoders to include (default: all in the file)")
    p.add_argument("--pair", type=Path, required=True, help="a preprocessed pair folder (its fixed image is used)")
    p.add_argument("--displacement", type=Path, help="(X, Y, 1, 1, 2) mm field for the commutativity figure")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=_figures)

    p = subparsers.add_parser("encoder-layers", help="list the layers an encoder kind's `layers:` can select")
    p.add_argument("kind", help="encoder kind (dinov2, sam, timm, litemedsam, vgg16)")
    p.add_argument("--size", type=int, help="input_size as in the encoder's config (default: the kind's own)")
    p.add_argument("--model", help="timm model name (kind timm; dinov2: overrides its ViT-B)")
    p.set_defaults(func=_layers)


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
    features_shard(spec, pair_dirs(args), args.out_dir, args.manifest, args.device, moving=args.moving)
    return 0


def _figures(args: argparse.Namespace) -> int:
    from featreg.encoders.registry import load_specs
    from featreg.reporting.feature_figures import write_feature_figures

    specs = load_specs(args.encoders, args.names)
    write_feature_figures(specs, args.pair, args.out, displacement=args.displacement, device=args.device)
    return 0


def _layers(args: argparse.Namespace) -> int:
    from featreg.encoders.features import kind_layers

    rows = [(str(layer.index), layer.name, str(layer.channels), f"{layer.grid[0]}x{layer.grid[1]}")
            for layer in kind_layers(args.kind, args.size, args.model)]
    table = [("index", "name", "channels", "grid"), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
