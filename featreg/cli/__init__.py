"""The ``featreg`` command: builds the parser from each area's module and dispatches."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from featreg.cli import data, encoders, reporting, workflow
from featreg.errors import FeatregError

AREAS = (data, encoders, reporting, workflow)
"""Each area's module adds its subcommands through ``add_parser(subparsers)`` and sets ``func``."""


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``featreg <command>: error: <message>`` (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="featreg",
        description="Vision-encoder features as guidance in B-spline FFD registration: "
        "data, features, registration, evaluation and reports (the Snakemake workflow calls these).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        area.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a user mistake is one line on stderr and exit status 2
    (bad argument, :class:`FeatregError`) or 1 (a ``ValueError`` from the library), not a traceback."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2), already printed
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
    except FeatregError as exc:
        print(f"featreg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"featreg {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
