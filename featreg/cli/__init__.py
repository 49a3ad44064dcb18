"""The ``featreg`` command: builds the parser from each area's module and dispatches."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from featreg.errors import FeatregError

# Each module adds its subcommands through ``add_parser(subparsers)`` and sets ``func``.
AREAS = ("data", "encoders", "reporting", "workflow")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featreg",
        description="Vision-encoder features as guidance in B-spline FFD registration: "
        "data, features, registration, evaluation and reports (the Snakemake workflow calls these).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        importlib.import_module(f"featreg.cli.{area}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
    except FeatregError as exc:
        print(f"featreg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
