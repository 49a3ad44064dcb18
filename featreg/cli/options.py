"""Command-line options several subcommands share."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    """``--pairs DIR...`` or ``--shard MANIFEST``: the pairs a shard command works on."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--pairs", type=Path, nargs="+", help="preprocessed pair folders (one per patient)")
    group.add_argument("--shard", type=Path,
                       help="a shard manifest (`featreg preprocess --manifest` or `featreg features --manifest`): its pairs")


def pair_dirs(args: argparse.Namespace) -> list[Path]:
    """The pair folders of ``--pairs`` or of the ``--shard`` manifest."""
    from featreg.data.pair_manifest import shard_pair_dirs

    return list(args.pairs) if args.pairs is not None else shard_pair_dirs(args.shard)
